//! A small client for Chroma's v2 HTTP API: just what export, import and
//! verification need.
//!
//! Responses that carry data (`get`, `query`, collection descriptions) are
//! returned as bytes for [`super::format`] to parse exactly: metadata and
//! configuration pass through as raw JSON text, embeddings are parsed with
//! a correctly rounding `f32` parser. The auth token goes in both headers
//! Chroma accepts (`Authorization: Bearer` and `X-Chroma-Token`) and is
//! never part of a message.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use crate::error::{Error, Result};

/// Collections listed per request.
const LIST_PAGE: usize = 100;
/// One request may take this long (a page of 1000 records of dimension
/// 1536 is about 15 MB of JSON).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A Chroma server, one tenant and database of it.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub tenant: String,
    pub database: String,
    token: Option<String>,
    /// `http://host:port` with no path, no credentials: the base of every
    /// request, and how messages name the server.
    display: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chroma::Client({})", self.display)
    }
}

/// A collection as the server describes it. `metadata`, `configuration`
/// and `schema` are kept as the server's JSON text, so they round-trip
/// exactly (doubles in metadata included).
#[derive(Debug, Clone, Deserialize)]
pub struct CollectionDesc {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub metadata: Option<Box<RawValue>>,
    #[serde(rename = "configuration_json", default)]
    pub configuration: Option<Box<RawValue>>,
    #[serde(default)]
    pub schema: Option<Box<RawValue>>,
    #[serde(default)]
    pub dimension: Option<u32>,
}

impl CollectionDesc {
    /// The distance function (`l2`, `cosine`, `ip`) from the configuration.
    pub fn space(&self) -> String {
        #[derive(Deserialize)]
        struct Conf {
            hnsw: Option<Space>,
            spann: Option<Space>,
        }
        #[derive(Deserialize)]
        struct Space {
            space: Option<String>,
        }
        self.configuration
            .as_ref()
            .and_then(|c| serde_json::from_str::<Conf>(c.get()).ok())
            .and_then(|c| {
                c.hnsw
                    .and_then(|h| h.space)
                    .or_else(|| c.spann.and_then(|s| s.space))
            })
            .unwrap_or_else(|| "l2".into())
    }
}

#[derive(Debug, Deserialize)]
struct PreFlight {
    max_batch_size: Option<usize>,
}

impl Client {
    /// A client for `url` (http or https), tenant and database.
    pub fn new(url: &Url, tenant: &str, database: &str, token: Option<&str>) -> Result<Client> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::usage(format!(
                "{}: a Chroma server URL is http://HOST:PORT or https://HOST:PORT",
                crate::util::redact_url(url)
            )));
        }
        let mut base = url.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_path("");
        base.set_query(None);
        base.set_fragment(None);
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::failed(format!("cannot set up an HTTP client: {e}")))?;
        Ok(Client {
            http,
            display: base.as_str().trim_end_matches('/').to_string(),
            tenant: tenant.to_string(),
            database: database.to_string(),
            token: token.map(str::to_string),
        })
    }

    /// The server URL, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.display, path)
    }

    /// `/api/v2/tenants/T/databases/D` + `rest`.
    fn db_path(&self, rest: &str) -> String {
        format!(
            "/api/v2/tenants/{}/databases/{}{rest}",
            self.tenant, self.database
        )
    }

    /// One request; the body of a 2xx answer, else an error that names
    /// what was asked and what the server said.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<(StatusCode, Bytes)> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = &self.token {
            req = req
                .header("authorization", format!("Bearer {t}"))
                .header("x-chroma-token", t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(what, &e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(what, &e))?;
        Ok((status, bytes))
    }

    /// [`Self::call`], requiring a 2xx answer.
    async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        what: &str,
    ) -> Result<Bytes> {
        let (status, bytes) = self.call(method, path, body, what).await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(self.refused(what, status, &bytes))
        }
    }

    fn unreachable(&self, what: &str, e: &reqwest::Error) -> Error {
        // reqwest's Display omits the cause chain ("error sending request");
        // the cause (connection refused, reset) is what an operator needs.
        // (URLs hold no credentials: the token travels in headers.)
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        Error::source(format!("Chroma at {}: {what} failed: {msg}", self.display))
            .hint(format!(
                "check that the Chroma server at {} is running and reachable (`curl {}/api/v2/heartbeat`)",
                self.display, self.display
            ))
            .retryable()
    }

    fn refused(&self, what: &str, status: StatusCode, body: &[u8]) -> Error {
        let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
        let e = Error::source(format!(
            "Chroma at {}: {what} failed: HTTP {status}: {text}",
            self.display
        ));
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => e.hint(
                "set `token` for this source in strata.toml (sent as `Authorization: Bearer` and `X-Chroma-Token`)",
            ),
            _ => e,
        }
    }

    /// The server's version (`/api/v2/version`).
    pub async fn version(&self) -> Result<String> {
        let b = self
            .ok(Method::GET, "/api/v2/version", None, "asking the version")
            .await?;
        Ok(serde_json::from_slice::<String>(&b)
            .unwrap_or_else(|_| String::from_utf8_lossy(&b).trim().to_string()))
    }

    /// Most records per add request the server takes.
    pub async fn max_batch_size(&self) -> Result<Option<usize>> {
        let b = self
            .ok(
                Method::GET,
                "/api/v2/pre-flight-checks",
                None,
                "pre-flight checks",
            )
            .await?;
        Ok(serde_json::from_slice::<PreFlight>(&b)
            .ok()
            .and_then(|p| p.max_batch_size))
    }

    /// Whether the tenant's database exists.
    pub async fn database_exists(&self) -> Result<bool> {
        let path = self.db_path("");
        let what = format!("looking up database {}/{}", self.tenant, self.database);
        let (status, body) = self.call(Method::GET, &path, None, &what).await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.refused(&what, s, &body)),
        }
    }

    /// Creates the database in the tenant.
    pub async fn create_database(&self) -> Result<()> {
        let body = serde_json::to_vec(&serde_json::json!({ "name": self.database })).unwrap();
        self.ok(
            Method::POST,
            &format!("/api/v2/tenants/{}/databases", self.tenant),
            Some(body),
            &format!("creating database {}/{}", self.tenant, self.database),
        )
        .await?;
        Ok(())
    }

    /// Every collection of the database, by name.
    pub async fn collections(&self) -> Result<Vec<CollectionDesc>> {
        let mut all = Vec::new();
        loop {
            let path = self.db_path(&format!(
                "/collections?limit={LIST_PAGE}&offset={}",
                all.len()
            ));
            let b = self
                .ok(Method::GET, &path, None, "listing collections")
                .await?;
            let page: Vec<CollectionDesc> = serde_json::from_slice(&b).map_err(|e| {
                Error::source(format!(
                    "Chroma at {}: unexpected collection list: {e}",
                    self.display
                ))
            })?;
            let n = page.len();
            all.extend(page);
            if n < LIST_PAGE {
                break;
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The collection called `name`, if it exists.
    pub async fn collection(&self, name: &str) -> Result<Option<CollectionDesc>> {
        let path = self.db_path(&format!("/collections/{name}"));
        let what = format!("looking up collection {name}");
        let (status, body) = self.call(Method::GET, &path, None, &what).await?;
        match status {
            s if s.is_success() => serde_json::from_slice(&body).map(Some).map_err(|e| {
                Error::source(format!(
                    "Chroma at {}: unexpected description of collection {name}: {e}",
                    self.display
                ))
            }),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.refused(&what, s, &body)),
        }
    }

    /// Creates a collection with the given metadata and configuration (raw
    /// JSON as exported).
    pub async fn create_collection(
        &self,
        name: &str,
        metadata: Option<&RawValue>,
        configuration: Option<&RawValue>,
    ) -> Result<CollectionDesc> {
        #[derive(serde::Serialize)]
        struct Create<'a> {
            name: &'a str,
            metadata: Option<&'a RawValue>,
            configuration: Option<&'a RawValue>,
        }
        let body = serde_json::to_vec(&Create {
            name,
            metadata,
            configuration,
        })
        .expect("serialises");
        let b = self
            .ok(
                Method::POST,
                &self.db_path("/collections"),
                Some(body),
                &format!("creating collection {name}"),
            )
            .await?;
        serde_json::from_slice(&b).map_err(|e| {
            Error::source(format!(
                "Chroma at {}: unexpected answer creating collection {name}: {e}",
                self.display
            ))
        })
    }

    /// Deletes the collection called `name`.
    pub async fn delete_collection(&self, name: &str) -> Result<()> {
        self.ok(
            Method::DELETE,
            &self.db_path(&format!("/collections/{name}")),
            None,
            &format!("deleting collection {name}"),
        )
        .await?;
        Ok(())
    }

    /// Renames the collection with id `id`.
    pub async fn rename_collection(&self, id: &str, from: &str, to: &str) -> Result<()> {
        let body = serde_json::to_vec(&serde_json::json!({ "new_name": to })).unwrap();
        self.ok(
            Method::PUT,
            &self.db_path(&format!("/collections/{id}")),
            Some(body),
            &format!("renaming collection {from} to {to}"),
        )
        .await?;
        Ok(())
    }

    /// Records in the collection.
    pub async fn count(&self, id: &str, name: &str) -> Result<u64> {
        let b = self
            .ok(
                Method::GET,
                &self.db_path(&format!("/collections/{id}/count")),
                None,
                &format!("counting collection {name}"),
            )
            .await?;
        serde_json::from_slice(&b).map_err(|e| {
            Error::source(format!(
                "Chroma at {}: unexpected count of {name}: {e}",
                self.display
            ))
        })
    }

    /// One page of records with everything included, as the server's JSON.
    pub async fn get_page(&self, id: &str, name: &str, offset: u64, limit: usize) -> Result<Bytes> {
        let body = serde_json::to_vec(&serde_json::json!({
            "limit": limit,
            "offset": offset,
            "include": ["embeddings", "documents", "metadatas", "uris"],
        }))
        .unwrap();
        self.ok(
            Method::POST,
            &self.db_path(&format!("/collections/{id}/get")),
            Some(body),
            &format!("reading collection {name} at record {offset}"),
        )
        .await
    }

    /// Adds records: `body` is a ready add payload.
    pub async fn add(&self, id: &str, name: &str, body: Vec<u8>) -> Result<()> {
        self.ok(
            Method::POST,
            &self.db_path(&format!("/collections/{id}/add")),
            Some(body),
            &format!("adding records to collection {name}"),
        )
        .await?;
        Ok(())
    }

    /// Nearest-neighbour query: ids and distances of the `n` nearest
    /// records to `vector`, among `among` if given (then Chroma compares
    /// exactly, without the approximate index).
    pub async fn query(
        &self,
        id: &str,
        name: &str,
        vector: &[f32],
        n: usize,
        among: Option<&[String]>,
    ) -> Result<(Vec<String>, Vec<f32>)> {
        #[derive(Deserialize)]
        struct Answer {
            ids: Vec<Vec<String>>,
            distances: Option<Vec<Vec<Option<f32>>>>,
        }
        // `{}` prints the shortest decimal that parses back to the same f32.
        let mut body = String::with_capacity(vector.len() * 12 + 80);
        body.push_str("{\"n_results\":");
        body.push_str(&n.to_string());
        if let Some(ids) = among {
            body.push_str(",\"ids\":");
            body.push_str(&serde_json::to_string(ids).expect("serialises"));
        }
        body.push_str(",\"include\":[\"distances\"],\"query_embeddings\":[[");
        for (i, x) in vector.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!("{x:?}"));
        }
        body.push_str("]]}");
        let b = self
            .ok(
                Method::POST,
                &self.db_path(&format!("/collections/{id}/query")),
                Some(body.into_bytes()),
                &format!("querying collection {name}"),
            )
            .await?;
        let a: Answer = serde_json::from_slice(&b).map_err(|e| {
            Error::source(format!(
                "Chroma at {}: unexpected query answer from {name}: {e}",
                self.display
            ))
        })?;
        let ids = a.ids.into_iter().next().unwrap_or_default();
        let distances = a
            .distances
            .and_then(|d| d.into_iter().next())
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.unwrap_or(f32::NAN))
            .collect();
        Ok((ids, distances))
    }
}
