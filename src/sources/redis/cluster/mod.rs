//! Redis Cluster: a source whose URL names any node of a cluster
//! (`cluster_enabled:1`) is backed up as the whole cluster — every master's
//! snapshot, taken concurrently, one object per shard, with the slot map
//! and the skew between the first and the last cut in the manifest — and
//! restored into a cluster of any shape (each key to the master owning
//! its slot), into one standalone server, or as one RDB file per shard.
//!
//! This module holds the topology: hash slots (`CRC16(key) mod 16384`,
//! hash tags), the slot map read with `CLUSTER SHARDS` (Redis 7) or
//! `CLUSTER NODES` (older), and the checks that make a backup refuse a
//! cluster that is not settled (state not ok, a slot migrating or
//! importing, slots without an owner). [`backup`] takes the snapshots,
//! [`route`] sends keys to their owners, [`restore`] restores.
//!
//! Node addresses come from the cluster; the URL's user, password and TLS
//! parameters (`cacert`, `cert`, `key`, `sni`) apply to every node.

pub mod backup;
pub mod restore;
pub mod route;
pub mod verify;

use std::time::Duration;

use url::Url;

use super::Target;
use super::client::{Client, Reply, info_field};
use crate::error::{Error, Result};

/// Hash slots of a Redis cluster.
pub const SLOTS: usize = 16384;
/// How often a backup checks for a settled cluster before it gives up.
pub const SETTLE_ATTEMPTS: u32 = 3;
/// Pause between those checks.
pub const SETTLE_PAUSE: Duration = Duration::from_secs(1);

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`: only the part between the first `{` and the
/// next `}` counts when that part is not empty (hash tags).
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|s| {
            let rest = &key[s + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&e| e > 0)
                .map(|e| &rest[..e])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

/// One master and the slots it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    pub id: String,
    pub host: String,
    pub port: u16,
    /// Inclusive ranges, ascending.
    pub slots: Vec<[u16; 2]>,
}

impl Master {
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn slot_count(&self) -> usize {
        self.slots
            .iter()
            .map(|r| usize::from(r[1]) - usize::from(r[0]) + 1)
            .sum()
    }
}

/// The masters of a cluster and how it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Masters serving slots, ordered by their first slot.
    pub masters: Vec<Master>,
    /// `CLUSTER SHARDS` or `CLUSTER NODES`.
    pub read_with: &'static str,
}

impl Topology {
    /// The owner (index into `masters`) of every slot; the slots without one.
    pub fn owners(&self) -> (Vec<u16>, Vec<u16>) {
        let mut owner = vec![u16::MAX; SLOTS];
        for (i, m) in self.masters.iter().enumerate() {
            for r in &m.slots {
                for s in r[0]..=r[1] {
                    owner[usize::from(s)] = i as u16;
                }
            }
        }
        let missing = (0..SLOTS as u16)
            .filter(|&s| owner[usize::from(s)] == u16::MAX)
            .collect();
        (owner, missing)
    }

    /// The same slots on the same nodes (ids and ranges).
    pub fn same_map(&self, other: &Topology) -> bool {
        let key = |t: &Topology| {
            let mut v: Vec<(String, Vec<[u16; 2]>)> = t
                .masters
                .iter()
                .map(|m| (m.id.clone(), m.slots.clone()))
                .collect();
            v.sort();
            v
        };
        key(self) == key(other)
    }
}

/// `0-5460 5462 7000-7001` for messages.
pub fn show_ranges(r: &[[u16; 2]]) -> String {
    r.iter()
        .map(|[a, b]| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sorts and merges adjacent ranges.
fn normalise(mut r: Vec<[u16; 2]>) -> Vec<[u16; 2]> {
    r.sort();
    let mut out: Vec<[u16; 2]> = Vec::with_capacity(r.len());
    for x in r {
        match out.last_mut() {
            Some(l) if u32::from(x[0]) <= u32::from(l[1]) + 1 => l[1] = l[1].max(x[1]),
            _ => out.push(x),
        }
    }
    out
}

/// A map field of a RESP2 flat array (`["id", v, "port", v, …]`).
fn field<'a>(items: &'a [Reply], name: &str) -> Option<&'a Reply> {
    items
        .chunks(2)
        .find(|p| match &p[0] {
            Reply::Bulk(Some(k)) => k.as_slice() == name.as_bytes(),
            Reply::Status(k) => k == name,
            _ => false,
        })
        .and_then(|p| p.get(1))
}

fn text(r: Option<&Reply>) -> Option<String> {
    match r? {
        Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Reply::Status(s) => Some(s.clone()),
        Reply::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Masters from a `CLUSTER SHARDS` reply (Redis 7+); `tls`: address the
/// nodes by their `tls-port` when they have one.
pub fn parse_shards(reply: &Reply, tls: bool) -> std::result::Result<Vec<Master>, String> {
    let Reply::Array(Some(shards)) = reply else {
        return Err(format!("CLUSTER SHARDS answered {reply:?}"));
    };
    let mut out = Vec::new();
    for shard in shards {
        let Reply::Array(Some(items)) = shard else {
            return Err("CLUSTER SHARDS: a shard is not a map".into());
        };
        let mut slots = Vec::new();
        if let Some(Reply::Array(Some(s))) = field(items, "slots") {
            for pair in s.chunks(2) {
                let n = |r: &Reply| match r {
                    Reply::Int(i) => u16::try_from(*i).ok(),
                    other => text(Some(other)).and_then(|t| t.parse().ok()),
                };
                match (pair.first().and_then(n), pair.get(1).and_then(n)) {
                    (Some(a), Some(b)) if a <= b && usize::from(b) < SLOTS => slots.push([a, b]),
                    _ => return Err(format!("CLUSTER SHARDS: bad slot range {pair:?}")),
                }
            }
        }
        if slots.is_empty() {
            continue;
        }
        let Some(Reply::Array(Some(nodes))) = field(items, "nodes") else {
            return Err("CLUSTER SHARDS: a shard without nodes".into());
        };
        let master = nodes.iter().find_map(|n| match n {
            Reply::Array(Some(f)) if text(field(f, "role")).as_deref() == Some("master") => Some(f),
            _ => None,
        });
        let Some(f) = master else {
            return Err(format!(
                "the shard serving slots {} has no master",
                show_ranges(&slots)
            ));
        };
        let port = if tls {
            text(field(f, "tls-port")).or_else(|| text(field(f, "port")))
        } else {
            text(field(f, "port")).or_else(|| text(field(f, "tls-port")))
        };
        let host = text(field(f, "endpoint"))
            .filter(|e| !e.is_empty() && e != "?")
            .or_else(|| text(field(f, "ip")))
            .unwrap_or_default();
        out.push(Master {
            id: text(field(f, "id")).unwrap_or_default(),
            host,
            port: port.and_then(|p| p.parse().ok()).unwrap_or(0),
            slots: normalise(slots),
        });
    }
    out.sort_by_key(|m| m.slots.first().map(|r| r[0]));
    Ok(out)
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub myself: bool,
    pub master: bool,
    pub failed: bool,
    pub slots: Vec<[u16; 2]>,
    /// `[slot->-id]` and `[slot-<-id]` entries: slots moving.
    pub moving: Vec<String>,
}

/// Parses `CLUSTER NODES` text.
pub fn parse_nodes(text: &str) -> std::result::Result<Vec<NodeLine>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return Err(format!("CLUSTER NODES: malformed line {line:?}"));
        }
        // ip:port@cport[,hostname]
        let addr = f[1].split(['@', ',']).next().unwrap_or("");
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("CLUSTER NODES: malformed address {:?}", f[1]))?;
        let flags: Vec<&str> = f[2].split(',').collect();
        let mut slots = Vec::new();
        let mut moving = Vec::new();
        for s in &f[8..] {
            if s.starts_with('[') {
                moving.push(s.to_string());
                continue;
            }
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) if a <= b && usize::from(b) < SLOTS => slots.push([a, b]),
                _ => return Err(format!("CLUSTER NODES: bad slot {s:?}")),
            }
        }
        out.push(NodeLine {
            id: f[0].to_string(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: port.parse().unwrap_or(0),
            myself: flags.contains(&"myself"),
            master: flags.contains(&"master"),
            failed: flags.iter().any(|f| *f == "fail" || *f == "fail?"),
            slots: normalise(slots),
            moving,
        });
    }
    Ok(out)
}

/// The target for `host:port` with the URL's credentials and TLS settings.
pub fn node_target(url: &Url, host: &str, port: u16) -> Target {
    let mut u = url.clone();
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    // a host the URL crate refuses keeps the URL's (the error then names it)
    let _ = u.set_host(Some(&h));
    let _ = u.set_port(Some(port));
    Target::new(&u)
}

/// Whether the server `client` is connected to runs in cluster mode.
pub async fn enabled(client: &mut Client) -> Result<bool> {
    Ok(info_field(&client.info("cluster").await?, "cluster_enabled") == Some("1"))
}

fn cluster_err(t: &Target, what: String) -> Error {
    Error::source(format!("redis cluster at {}: {what}", t.display()))
}

/// Reads the masters and their slots through `client` (a node of the
/// cluster at `url`): `CLUSTER SHARDS`, or `CLUSTER NODES` where the
/// server does not know it.
pub async fn topology(client: &mut Client, t: &Target, url: &Url) -> Result<Topology> {
    let tls = url.scheme() == "rediss";
    // older servers do not know CLUSTER SHARDS, and an ACL may allow only
    // CLUSTER NODES: both say the same
    let (mut masters, read_with) = match client.command(&[b"CLUSTER", b"SHARDS"]).await? {
        Reply::Error(_) => (nodes_topology(client, t).await?, "CLUSTER NODES"),
        r => (
            parse_shards(&r, tls).map_err(|m| cluster_err(t, m))?,
            "CLUSTER SHARDS",
        ),
    };
    // a node announcing no address (`?`, or a bind-all address) is reached
    // where the URL reaches the cluster
    for m in &mut masters {
        if m.host.is_empty() || m.host == "?" {
            m.host = t.host.clone();
        }
    }
    Ok(Topology { masters, read_with })
}

async fn nodes_topology(client: &mut Client, t: &Target) -> Result<Vec<Master>> {
    let text = cluster_nodes(client, t).await?;
    let mut masters: Vec<Master> = parse_nodes(&text)
        .map_err(|m| cluster_err(t, m))?
        .into_iter()
        .filter(|n| n.master && !n.slots.is_empty())
        .map(|n| Master {
            id: n.id,
            host: n.host,
            port: n.port,
            slots: n.slots,
        })
        .collect();
    masters.sort_by_key(|m| m.slots.first().map(|r| r[0]));
    Ok(masters)
}

/// `CLUSTER NODES` as text.
pub async fn cluster_nodes(client: &mut Client, t: &Target) -> Result<String> {
    match client.command(&[b"CLUSTER", b"NODES"]).await? {
        Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Reply::Error(e) => {
            Err(client.refused("CLUSTER NODES", &e, "a cluster backup needs +cluster"))
        }
        other => Err(cluster_err(t, format!("CLUSTER NODES answered {other:?}"))),
    }
}

/// Why the cluster is not settled enough for a backup (or a restore into
/// it), `None` when it is: its state is ok, every slot has an owner, and
/// no master has a slot migrating or importing (each master reports its
/// own, so every master is asked).
pub async fn unsettled(
    topo: &Topology,
    url: &Url,
    clients: &mut [Client],
) -> Result<Option<String>> {
    let (_, missing) = topo.owners();
    if !missing.is_empty() {
        return Ok(Some(format!(
            "{} of {SLOTS} slots have no master (first: {})",
            missing.len(),
            missing[0]
        )));
    }
    for (m, c) in topo.masters.iter().zip(clients.iter_mut()) {
        let t = node_target(url, &m.host, m.port);
        let state = match c.command(&[b"CLUSTER", b"INFO"]).await? {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
            Reply::Error(e) => {
                return Err(c.refused("CLUSTER INFO", &e, "a cluster backup needs +cluster"));
            }
            other => return Err(cluster_err(&t, format!("CLUSTER INFO answered {other:?}"))),
        };
        if info_field(&state, "cluster_state") != Some("ok") {
            return Ok(Some(format!(
                "{} reports cluster_state:{}",
                m.address(),
                info_field(&state, "cluster_state").unwrap_or("?")
            )));
        }
        let nodes = parse_nodes(&cluster_nodes(c, &t).await?).map_err(|e| cluster_err(&t, e))?;
        if let Some(me) = nodes.iter().find(|n| n.myself)
            && !me.moving.is_empty()
        {
            return Ok(Some(format!(
                "slots are being moved on {} ({}): a migration (resharding) is under way",
                m.address(),
                me.moving.join(" ")
            )));
        }
    }
    Ok(None)
}

/// Connects to every master of `topo`.
pub async fn connect_all(topo: &Topology, url: &Url) -> Result<Vec<Client>> {
    let mut out = Vec::with_capacity(topo.masters.len());
    for m in &topo.masters {
        out.push(Client::connect(&node_target(url, &m.host, m.port)).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // values from `CLUSTER KEYSLOT`
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b""), 0);
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn nodes_parsing() {
        let text = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host replica e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected\n\
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922\n\
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]\n";
        let n = parse_nodes(text).unwrap();
        assert_eq!(n.len(), 3);
        assert!(!n[0].master && n[1].master && n[2].myself);
        assert_eq!(n[1].slots, vec![[5461, 10922]]);
        assert_eq!((n[2].host.as_str(), n[2].port), ("127.0.0.1", 30001));
        assert_eq!(n[2].moving.len(), 1);
        assert!(parse_nodes("short line").is_err());
    }

    #[test]
    fn shards_parsing_and_owners() {
        let b = |s: &str| Reply::Bulk(Some(s.as_bytes().to_vec()));
        let node = |id: &str, port: i64, role: &str| {
            Reply::Array(Some(vec![
                b("id"),
                b(id),
                b("port"),
                Reply::Int(port),
                b("ip"),
                b("127.0.0.1"),
                b("endpoint"),
                b("127.0.0.1"),
                b("role"),
                b(role),
            ]))
        };
        let shard = |slots: Vec<i64>, nodes: Vec<Reply>| {
            Reply::Array(Some(vec![
                b("slots"),
                Reply::Array(Some(slots.into_iter().map(Reply::Int).collect())),
                b("nodes"),
                Reply::Array(Some(nodes)),
            ]))
        };
        let r = Reply::Array(Some(vec![
            shard(
                vec![8192, 16383],
                vec![node("r", 7003, "replica"), node("b", 7001, "master")],
            ),
            shard(vec![0, 100, 101, 8191], vec![node("a", 7000, "master")]),
        ]));
        let m = parse_shards(&r, false).unwrap();
        assert_eq!(m[0].id, "a");
        assert_eq!(m[0].slots, vec![[0, 8191]]);
        assert_eq!((m[1].port, m[1].slot_count()), (7001, 8192));
        let t = Topology {
            masters: m,
            read_with: "CLUSTER SHARDS",
        };
        let (owner, missing) = t.owners();
        assert!(missing.is_empty());
        assert_eq!((owner[0], owner[16383]), (0, 1));
        assert_eq!(show_ranges(&[[0, 5], [7, 7]]), "0-5 7");
    }

    #[test]
    fn node_targets_keep_credentials_and_tls() {
        let u = Url::parse("rediss://bob:pw@10.0.0.1:7000?cacert=/ca.pem&sni=db").unwrap();
        let t = node_target(&u, "10.0.0.2", 7001);
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.2", 7001));
        assert_eq!(
            (t.user.as_deref(), t.password.as_deref()),
            (Some("bob"), Some("pw"))
        );
        assert!(
            t.tls
                .is_some_and(|s| s.server_name.as_deref() == Some("db"))
        );
    }
}
