//! Loading a logical snapshot into a server: the records (format in
//! [`super`]) read back through the pipeline and replayed as pipelined
//! `SELECT` and `RESTORE key expire_at payload ABSTTL REPLACE` batches.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    BATCH_BYTES, BATCH_COMMANDS, CHANNEL_CHUNKS, Event, Parser, Totals, damaged, encode, now_ms,
    show_key,
};
use crate::error::{Error, Result};
use crate::keys::Identity;
use crate::pipeline::{ObjectRecord, fetch};
use crate::progress::Reporter;
use crate::sources::redis::Target;
use crate::sources::redis::client::{Client, Reply};
use crate::storage::Storage;

/// What loading a logical snapshot did.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub totals: Totals,
    /// Keys whose expiry passed before they were restored (Redis accepts
    /// them and drops them at once).
    pub expired: u64,
    /// Bytes of the object read.
    pub bytes: u64,
}

/// A blocking sink for the decoder that forwards chunks to the task
/// sending keys to Redis (the loader here, the cluster router too).
pub(crate) struct ForwardSink {
    pub(crate) tx: mpsc::Sender<Bytes>,
    /// The error when that task stopped reading.
    pub(crate) stopped: &'static str,
}

impl Write for ForwardSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| io::Error::other(self.stopped))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Pipelined `SELECT`/`RESTORE` commands not sent yet, and what each is
/// for (the key, for messages).
struct Batch {
    req: Vec<u8>,
    what: Vec<Option<Vec<u8>>>,
}

impl Batch {
    async fn flush(&mut self, client: &mut Client, t: &Target) -> Result<()> {
        if self.what.is_empty() {
            return Ok(());
        }
        client.send_encoded(std::mem::take(&mut self.req)).await?;
        let mut first_err = None;
        for what in self.what.drain(..) {
            let r = client.reply().await?;
            let bad = match r {
                Reply::Status(_) => continue,
                Reply::Error(e) => e,
                other => format!("{other:?}"),
            };
            if first_err.is_some() {
                continue;
            }
            first_err = Some(restore_refused(t, what.as_deref(), &bad));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The error for a refused `RESTORE key` (`SELECT` when `key` is `None`),
/// with a hint for the usual causes.
pub(in crate::sources::redis) fn restore_refused(
    t: &Target,
    key: Option<&[u8]>,
    bad: &str,
) -> Error {
    let cmd = match key {
        Some(k) => format!("RESTORE {}", show_key(k)),
        None => "SELECT".to_string(),
    };
    let hint = if bad.contains("checksum") || bad.contains("version") {
        "the target runs an older Redis than the source: a DUMP payload loads only into the same or a newer Redis version"
    } else if bad.starts_with("NOPERM") {
        "the target user needs SELECT and RESTORE (ACL: +select +restore)"
    } else if bad.starts_with("OOM") {
        "the target ran out of memory (maxmemory): give it more, or restore into a larger one"
    } else {
        "the keys before this one were loaded; fix the cause and run the restore again (--replace)"
    };
    Error::source(format!("{}: {cmd} refused: {bad}", t.display())).hint(hint)
}

/// Loads the logical snapshot `rec` into the server `client` is connected
/// to, with pipelined `RESTORE … ABSTTL REPLACE`. Records are applied as
/// they are read and checked: a damaged object stops the load where the
/// damage is (the keys before it are loaded), and the error says so.
pub async fn load(
    client: &mut Client,
    t: &Target,
    storage: &Arc<dyn Storage>,
    rec: &ObjectRecord,
    identities: Arc<Vec<Identity>>,
    reporter: &Reporter,
) -> Result<Loaded> {
    let step = reporter.step(
        format!("{} → {}", rec.key, t.display()),
        Some(rec.plain_size),
    );
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    // The sink (holding the sender) is dropped as soon as the fetch ends,
    // so the loader sees the end of the stream.
    let fetching = async {
        fetch(
            storage,
            rec,
            identities,
            ForwardSink {
                tx,
                stopped: "the load into the target stopped",
            },
            step.progress.clone(),
        )
        .await
        .map(drop)
    };
    let applying = async {
        let mut parser = Parser::new();
        let mut batch = Batch {
            req: Vec::new(),
            what: Vec::new(),
        };
        let mut expired = 0u64;
        let mut bytes = 0u64;
        while let Some(chunk) = rx.recv().await {
            bytes += chunk.len() as u64;
            parser.feed(&chunk);
            loop {
                let ev = parser.next_event().map_err(|m| damaged(&rec.key, &m))?;
                match ev {
                    None => break,
                    Some(Event::Select(db)) => {
                        encode(&mut batch.req, &[b"SELECT", db.to_string().as_bytes()]);
                        batch.what.push(None);
                    }
                    Some(Event::Key {
                        key,
                        expire_at,
                        payload,
                    }) => {
                        if expire_at != 0 && expire_at <= now_ms() {
                            expired += 1;
                        }
                        let ttl = expire_at.to_string();
                        encode(
                            &mut batch.req,
                            &[
                                b"RESTORE",
                                &key,
                                ttl.as_bytes(),
                                &payload,
                                b"ABSTTL",
                                b"REPLACE",
                            ],
                        );
                        batch.what.push(Some(key));
                    }
                }
                if batch.what.len() >= BATCH_COMMANDS || batch.req.len() >= BATCH_BYTES {
                    batch.flush(client, t).await?;
                }
            }
        }
        let totals = parser.finish().map_err(|m| damaged(&rec.key, &m))?;
        batch.flush(client, t).await?;
        Ok::<_, Error>(Loaded {
            totals,
            expired,
            bytes,
        })
    };
    let (fetched, applied) = tokio::join!(fetching, applying);
    let r = first_cause(fetched, applied);
    match &r {
        Ok(l) => {
            step.done(&format!(
                "{} keys restored{}",
                l.totals.keys,
                if l.expired > 0 {
                    format!(" ({} already expired)", l.expired)
                } else {
                    String::new()
                }
            ));
        }
        Err(_) => step.abandon(),
    }
    r.map_err(|e| {
        e.context(format!(
            "loading {} into {} stopped; keys restored before the failure stay",
            rec.key,
            t.display()
        ))
    })
}

/// The error that explains a fetch (the object streamed through the
/// pipeline) and a loader (the keys sent to Redis) that ran side by side:
/// the loader's (a refused RESTORE, a format error) explains a stopped
/// fetch best; a fetch failure (damage the hash or age found) explains a
/// parser that saw the stream end early ("cut short").
pub(crate) fn first_cause<F, L>(fetched: Result<F>, applied: Result<L>) -> Result<L> {
    match (fetched, applied) {
        (Ok(_), Ok(l)) => Ok(l),
        (Err(f), Err(a)) if a.message.contains("cut short") => Err(f),
        (_, Err(a)) => Err(a),
        (Err(f), Ok(_)) => Err(f),
    }
}
