//! Sending restored keys where they belong: each key of a snapshot (an RDB
//! shard read with [`crate::sources::redis::rdb_keys`], or a logical
//! snapshot's records) becomes `RESTORE key expire_at payload ABSTTL
//! REPLACE`, pipelined in batches per node, to the master owning the
//! key's slot — or, into a standalone server, to that server with
//! `SELECT` per database. A `MOVED` (the target's slot map changed, or
//! was read from a node that knew less) is followed: the key is sent to
//! the node named and the slot remembered there; `ASK` is followed with
//! `ASKING`.
//!
//! Objects stream from the repository through the pipeline and are parsed
//! as they arrive: memory holds one chunk, one key and the batches.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use url::Url;

use super::{SLOTS, key_slot, node_target};
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::pipeline::{ObjectRecord, fetch};
use crate::progress::Reporter;
use crate::sources::redis::Target;
use crate::sources::redis::client::{Client, Reply};
use crate::sources::redis::logical::load::{ForwardSink, restore_refused};
use crate::sources::redis::logical::{
    self, BATCH_BYTES, BATCH_COMMANDS, CHANNEL_CHUNKS, Event, Totals,
};
use crate::sources::redis::rdb_keys::RdbKeys;
use crate::storage::Storage;

/// How many redirections one key may take.
const MAX_REDIRECTS: usize = 5;

struct Node {
    t: Target,
    client: Client,
    req: Vec<u8>,
    /// Per command in `req`: the key (`None` for `SELECT`) and where the
    /// command lies in `req`.
    what: Vec<(Option<Vec<u8>>, usize, usize)>,
}

/// Where keys go: the masters of a cluster by slot, or one server.
pub struct Router {
    url: Option<Url>,
    nodes: Vec<Node>,
    /// Slot → node; `None`: one standalone server (databases kept).
    owner: Option<Vec<u16>>,
    /// Keys whose expiry passed before they were restored.
    pub expired: u64,
    /// Keys sent elsewhere after a `MOVED` or `ASK`.
    pub redirected: u64,
}

impl Router {
    /// Into one standalone server.
    pub fn single(t: Target, client: Client) -> Router {
        Router {
            url: None,
            nodes: vec![Node {
                t,
                client,
                req: Vec::new(),
                what: Vec::new(),
            }],
            owner: None,
            expired: 0,
            redirected: 0,
        }
    }

    /// Into the masters of a cluster (`clients` in the order of
    /// `topo.masters`), reached with `url`'s credentials.
    pub fn cluster(url: &Url, topo: &super::Topology, clients: Vec<Client>) -> Router {
        let (owner, _) = topo.owners();
        Router {
            url: Some(url.clone()),
            nodes: topo
                .masters
                .iter()
                .zip(clients)
                .map(|(m, client)| Node {
                    t: node_target(url, &m.host, m.port),
                    client,
                    req: Vec::new(),
                    what: Vec::new(),
                })
                .collect(),
            owner: Some(owner),
            expired: 0,
            redirected: 0,
        }
    }

    async fn apply(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Select(db) => match &self.owner {
                None => {
                    let n = &mut self.nodes[0];
                    let at = n.req.len();
                    logical::encode(&mut n.req, &[b"SELECT", db.to_string().as_bytes()]);
                    n.what.push((None, at, n.req.len()));
                }
                Some(_) if db == 0 => {}
                Some(_) => {
                    return Err(Error::usage(format!(
                        "the backup holds keys in database {db}; a Redis Cluster has only database 0"
                    ))
                    .hint("restore it into a standalone server (--into redis://…, --to-dir), or move the keys to database 0 first"));
                }
            },
            Event::Key {
                key,
                expire_at,
                payload,
            } => {
                if expire_at != 0 && expire_at <= logical::now_ms() {
                    self.expired += 1;
                }
                let i = match &self.owner {
                    None => 0,
                    Some(o) => usize::from(o[usize::from(key_slot(&key))]),
                };
                let n = &mut self.nodes[i];
                let at = n.req.len();
                let ttl = expire_at.to_string();
                logical::encode(
                    &mut n.req,
                    &[
                        b"RESTORE",
                        &key,
                        ttl.as_bytes(),
                        &payload,
                        b"ABSTTL",
                        b"REPLACE",
                    ],
                );
                n.what.push((Some(key), at, n.req.len()));
                if n.what.len() >= BATCH_COMMANDS || n.req.len() >= BATCH_BYTES {
                    self.flush(i).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends every batch and reads the replies.
    pub async fn flush_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.flush(i).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, i: usize) -> Result<()> {
        let n = &mut self.nodes[i];
        if n.what.is_empty() {
            return Ok(());
        }
        let req = std::mem::take(&mut n.req);
        let what = std::mem::take(&mut n.what);
        n.client.send_encoded(req.clone()).await?;
        let mut first_err = None;
        let mut redirects = Vec::new();
        for (key, a, b) in what {
            let r = n.client.reply().await?;
            let bad = match r {
                Reply::Status(_) => continue,
                Reply::Error(e) => e,
                other => format!("{other:?}"),
            };
            if (bad.starts_with("MOVED ") || bad.starts_with("ASK ")) && self.owner.is_some() {
                redirects.push((bad, key, req[a..b].to_vec()));
                continue;
            }
            if first_err.is_none() {
                first_err = Some(restore_refused(&n.t, key.as_deref(), &bad));
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        for (how, key, cmd) in redirects {
            self.redirect(how, key.as_deref(), cmd).await?;
        }
        Ok(())
    }

    /// Follows a `MOVED slot host:port` or `ASK slot host:port` for one
    /// command.
    async fn redirect(&mut self, mut how: String, key: Option<&[u8]>, cmd: Vec<u8>) -> Result<()> {
        for _ in 0..MAX_REDIRECTS {
            self.redirected += 1;
            let mut f = how.split_whitespace();
            let (kind, slot, addr) = (f.next(), f.next(), f.next());
            let (Some(kind), Some(slot), Some((host, port))) = (
                kind,
                slot.and_then(|s| s.parse::<u16>().ok()),
                addr.and_then(|a| a.rsplit_once(':')),
            ) else {
                return Err(Error::source(format!("a malformed redirection: {how}")));
            };
            let port: u16 = port
                .parse()
                .map_err(|_| Error::source(format!("a malformed redirection: {how}")))?;
            let i = self.node_at(host, port).await?;
            if kind == "MOVED"
                && let Some(o) = &mut self.owner
                && usize::from(slot) < SLOTS
            {
                o[usize::from(slot)] = i as u16;
            }
            let n = &mut self.nodes[i];
            let mut req = Vec::new();
            if kind == "ASK" {
                logical::encode(&mut req, &[b"ASKING"]);
            }
            req.extend_from_slice(&cmd);
            n.client.send_encoded(req).await?;
            if kind == "ASK" {
                n.client.reply().await?;
            }
            match n.client.reply().await? {
                Reply::Status(_) => return Ok(()),
                Reply::Error(e) if e.starts_with("MOVED ") || e.starts_with("ASK ") => how = e,
                Reply::Error(e) => return Err(restore_refused(&n.t, key, &e)),
                other => return Err(restore_refused(&n.t, key, &format!("{other:?}"))),
            }
        }
        Err(Error::source(format!(
            "a key was redirected more than {MAX_REDIRECTS} times (last: {how})"
        ))
        .hint("the target cluster's slots are moving: restore once it is settled"))
    }

    /// The node at `host:port`, connected on first use.
    async fn node_at(&mut self, host: &str, port: u16) -> Result<usize> {
        if let Some(i) = self
            .nodes
            .iter()
            .position(|n| n.t.host == host && n.t.port == port)
        {
            return Ok(i);
        }
        let url = self
            .url
            .as_ref()
            .ok_or_else(|| Error::source("a standalone server answered with a redirection"))?;
        let t = node_target(url, host, port);
        let client = Client::connect(&t).await?;
        self.nodes.push(Node {
            t,
            client,
            req: Vec::new(),
            what: Vec::new(),
        });
        Ok(self.nodes.len() - 1)
    }

    /// Keys per node now (`DBSIZE`), with its address.
    pub async fn sizes(&mut self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            let k = match n.client.command(&[b"DBSIZE"]).await? {
                Reply::Int(k) => k.max(0) as u64,
                other => {
                    return Err(Error::source(format!(
                        "{}: DBSIZE answered {other:?}",
                        n.t.display()
                    )));
                }
            };
            out.push((format!("{}:{}", n.t.host, n.t.port), k));
        }
        Ok(out)
    }
}

/// How an object's bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// An RDB file (a replication snapshot).
    Rdb,
    /// strata's logical format.
    Logical,
}

enum Reader {
    Rdb(Box<RdbKeys>),
    Logical(logical::Parser),
}

impl Reader {
    fn feed(&mut self, b: &[u8]) -> std::result::Result<(), String> {
        match self {
            Reader::Rdb(p) => p.feed(b),
            Reader::Logical(p) => {
                p.feed(b);
                Ok(())
            }
        }
    }
    fn next(&mut self) -> std::result::Result<Option<Event>, String> {
        match self {
            Reader::Rdb(p) => p.next_event(),
            Reader::Logical(p) => p.next_event(),
        }
    }
    fn end(&mut self) {
        if let Reader::Rdb(p) = self {
            p.end();
        }
    }
    fn finish(self) -> std::result::Result<(Totals, u64), String> {
        match self {
            Reader::Rdb(p) => {
                let f = p.functions();
                p.finish().map(|t| (t, f))
            }
            Reader::Logical(p) => p.finish().map(|t| (t, 0)),
        }
    }
}

/// What one object held.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    pub totals: Totals,
    /// Function libraries in an RDB (not restored by key).
    pub functions: u64,
    /// [`Sink::Check`]: keys whose slot is not among the shard's, and the
    /// first of them.
    pub outside: u64,
    pub first_outside: Option<Vec<u8>>,
}

/// What [`replay`] does with the keys.
pub enum Sink<'a> {
    /// Restores them.
    Load(&'a mut Router),
    /// Checks that each key's slot is among these ranges (`verify`).
    Check(&'a [[u16; 2]]),
}

fn damaged(key: &str, why: &str) -> Error {
    Error::integrity(format!("{key}: {why}"))
        .hint("take a new backup; restore an older one meanwhile (strata list SOURCE)")
}

/// Reads `rec` back and hands every key to `sink`. Keys are applied as
/// they are read: a damaged object stops partway, the keys before the
/// damage loaded.
pub async fn replay(
    storage: &Arc<dyn Storage>,
    rec: &ObjectRecord,
    framing: Framing,
    identities: Arc<Vec<Identity>>,
    mut sink: Sink<'_>,
    reporter: &Reporter,
) -> Result<Replayed> {
    let step = reporter.step(rec.name.clone(), Some(rec.plain_size));
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let fetching = async {
        fetch(
            storage,
            rec,
            identities,
            ForwardSink {
                tx,
                stopped: "the restore stopped reading",
            },
            step.progress.clone(),
        )
        .await
        .map(drop)
    };
    let applying = async {
        let mut reader = match framing {
            Framing::Rdb => Reader::Rdb(Box::default()),
            Framing::Logical => Reader::Logical(logical::Parser::new()),
        };
        let mut ended = false;
        let mut outside = 0u64;
        let mut first_outside = None;
        loop {
            if !ended {
                match rx.recv().await {
                    Some(chunk) => reader.feed(&chunk).map_err(|m| damaged(&rec.key, &m))?,
                    None => {
                        ended = true;
                        reader.end();
                    }
                }
            }
            while let Some(ev) = reader.next().map_err(|m| damaged(&rec.key, &m))? {
                match &mut sink {
                    Sink::Load(r) => r.apply(ev).await?,
                    Sink::Check(ranges) => {
                        if let Event::Key { key, .. } = ev {
                            let slot = key_slot(&key);
                            if !ranges.iter().any(|[a, b]| (*a..=*b).contains(&slot)) {
                                outside += 1;
                                first_outside.get_or_insert(key);
                            }
                        }
                    }
                }
            }
            if ended {
                break;
            }
        }
        let (totals, functions) = reader.finish().map_err(|m| damaged(&rec.key, &m))?;
        if let Sink::Load(r) = &mut sink {
            r.flush_all().await?;
        }
        Ok::<_, Error>(Replayed {
            totals,
            functions,
            outside,
            first_outside,
        })
    };
    let (fetched, applied) = tokio::join!(fetching, applying);
    let r = crate::sources::redis::logical::load::first_cause(fetched, applied);
    match &r {
        Ok(l) => {
            step.done(&format!("{} keys", l.totals.keys));
        }
        Err(_) => step.abandon(),
    }
    r
}
