//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz`, see
//! `scripts/fuzz.sh`): each takes arbitrary bytes and runs them through
//! the parser strata uses on untrusted or hand-written input — the config
//! file, manifests (parsed and unsealed), time expressions, RDB streams,
//! Chroma exports, WAL file names, timeline history files, incremental
//! base backups' tars and the `blocks` rewriter of full ones with the basis
//! (issue 18). Whatever the
//! bytes, the parsers must return (an error is fine); a panic, an overflow
//! or a hang is a bug.
//!
//! The fuzz targets are one-line wrappers around these functions, so the
//! unit tests below can feed the committed seed corpora
//! (`fuzz/corpus/<target>/`) through exactly the same code in a plain
//! `cargo test`: a regression is caught even where the fuzzer does not run.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::catalog::manifest::{Manifest, ManifestFile};
use crate::keys::{Identity, Recipient};

/// A fixed age identity for the manifest target, so seeds can be sealed
/// to it. A test key, public in this repository: never use it for data.
pub const TEST_IDENTITY: &str =
    "AGE-SECRET-KEY-1AE2FP4E955A0TA8QJ6S3DH5XJ4TY54N50CE20JMHLQ9GH02KQ7WSEGDTMH";

/// The fixed instant relative times count back from.
fn fixed_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 0).expect("a valid instant")
}

fn test_keys() -> (Vec<Identity>, Vec<Recipient>) {
    let id: age::x25519::Identity = TEST_IDENTITY.parse().expect("the test identity parses");
    let r = id.to_public();
    (vec![Box::new(id)], vec![Box::new(r)])
}

/// `strata.toml` text: [`crate::config::Config::parse`], then what the
/// commands derive from a parsed config (schedules' next runs, retention
/// plans and object-lock periods).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `include` reads files: keep the fuzzer away from devices and
    // kernel files (a config naming /dev/zero is its author's to keep)
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    let path = Path::new("/nonexistent-strata-fuzz/strata.toml");
    let Ok(cfg) = crate::config::Config::parse(path, text) else {
        return;
    };
    let now = fixed_now();
    let _ = crate::scheduler::upcoming(cfg.tiers.values(), now, 3);
    for t in cfg.tiers.values() {
        if let Some(s) = &t.schedule {
            let _ = s.previous_run(t.tz(), now);
        }
        let _ = crate::tier::lock_period(&t.policy);
        if let Some(l) = t.object_lock {
            let _ = l.at(now);
        }
        let candidates = (0..3)
            .map(|i| crate::retention::Candidate {
                item: i,
                time: now - chrono::Duration::days(i64::from(i) * 40),
                source: "s".to_string(),
            })
            .collect();
        let _ = crate::retention::plan(&t.policy, t.tz(), candidates, now);
        for s in &t.sources {
            let _ = crate::tier::wal_window(&cfg.tiers, s);
            let _ = crate::tier::wal_lock(&cfg.tiers, s);
        }
    }
}

/// A stored manifest file: [`ManifestFile::parse`] and
/// [`ManifestFile::open`] with [`TEST_IDENTITY`]. Bytes that are a whole
/// (plain) manifest instead are sealed to the test key first and then
/// parsed and opened, so the sealed part's JSON is fuzzed too.
pub fn manifest(data: &[u8]) {
    let (identities, recipients) = test_keys();
    if let Ok(f) = ManifestFile::parse("fuzz", data) {
        let _ = f.open("fuzz", &identities);
        return;
    }
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    if m.summary.format > crate::catalog::manifest::MANIFEST_FORMAT {
        // refused by ManifestFile::parse, as it should be
        return;
    }
    let Ok(bytes) = m.to_file_bytes(&recipients) else {
        return;
    };
    let f = ManifestFile::parse("fuzz", &bytes).expect("a manifest strata wrote parses");
    let back = f
        .open("fuzz", &identities)
        .expect("a manifest strata wrote opens");
    assert_eq!(back.summary, m.summary, "the summary survives sealing");
}

/// A time expression as `--to-time` / `--at` take it, and a duration as
/// `--older-than` / `keep_within` take it; relative to a fixed instant and
/// to the ends of chrono's range.
pub fn time(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for now in [
        fixed_now(),
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
    ] {
        let _ = crate::timeparse::parse_time(text, now);
        let _ = crate::catalog::pick::parse_at(text, now);
    }
    if let Ok(d) = crate::util::parse_duration(text) {
        let _ = crate::util::human_duration(d);
    }
}

/// An RDB stream through [`crate::sources::redis::rdb::RdbCheck`], fed in
/// chunks whose sizes the first byte picks (the check must not depend on
/// how the stream is cut); the same bytes as a logical snapshot.
pub fn rdb(data: &[u8]) {
    use crate::sources::redis::rdb::RdbCheck;
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let whole = {
        let mut c = RdbCheck::new();
        c.feed(rest).and_then(|()| c.finish())
    };
    let chunked = {
        let mut c = RdbCheck::new();
        let step = usize::from(cut % 17) + 1;
        rest.chunks(step)
            .try_for_each(|ch| c.feed(ch))
            .and_then(|()| c.finish())
    };
    assert_eq!(
        whole.is_ok(),
        chunked.is_ok(),
        "the verdict depends on how the stream is cut: {whole:?} / {chunked:?}"
    );
    // a logical snapshot (issue 17 item 3) through its parser: the same
    // verdict however the stream is cut
    let logical = |step: usize| {
        let mut p = crate::sources::redis::logical::Parser::new();
        for ch in rest.chunks(step) {
            p.feed(ch);
            while p.next_event()?.is_some() {}
        }
        p.finish().map(|_| ())
    };
    let (a, b) = (
        logical(rest.len().max(1)),
        logical(usize::from(cut % 13) + 1),
    );
    assert_eq!(a.is_ok(), b.is_ok(), "logical: {a:?} / {b:?}");
    // the same bytes read key by key (a replication shard restored into a
    // cluster, issue 17 item 2): the same verdict and keys however cut
    let keys = |step: usize| {
        let mut p = crate::sources::redis::rdb_keys::RdbKeys::new();
        let mut n = 0u64;
        for ch in rest.chunks(step) {
            p.feed(ch)?;
            while p.next_event()?.is_some() {
                n += 1;
            }
        }
        p.end();
        while p.next_event()?.is_some() {
            n += 1;
        }
        p.finish().map(|t| (n, t.keys))
    };
    let (a, b) = (keys(rest.len().max(1)), keys(usize::from(cut % 11) + 1));
    assert_eq!(
        a.as_ref().ok(),
        b.as_ref().ok(),
        "rdb_keys: the result depends on how the stream is cut: {a:?} / {b:?}"
    );
    if let Ok(t) = &a {
        // the events are the keys and one select per database
        assert!(t.0 >= t.1, "rdb_keys: {t:?}");
    }
    let text = String::from_utf8_lossy(rest);
    let _ = crate::sources::redis::cluster::parse_nodes(&text);
    let _ = crate::sources::redis::cluster::key_slot(rest);
    // the replica-protocol parser of `restore --into` reads the same kind
    // of untrusted bytes (from the target server)
    let _ = crate::sources::redis::load::parse_command(rest);
    let _ = crate::sources::redis::client::parse_keyspace(&String::from_utf8_lossy(rest));
}

/// A Chroma export (JSON Lines) through
/// [`crate::sources::chroma::format::ExportReader`] as `restore` reads it,
/// with each record's embedding decoded; and the same bytes as a server's
/// `get` page and embeddings list (what `backup` parses).
pub fn chroma_export(data: &[u8]) {
    use crate::sources::chroma::format::{self, ExportReader, Line};
    let dimension = data.first().map(|&b| u32::from(b % 8));
    let mut reader = ExportReader::new(dimension.filter(|&d| d > 0));
    let mut rest = data;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let (line, tail) = (&rest[..nl], &rest[nl + 1..]);
        rest = tail;
        match reader.line(line) {
            Ok(Line::Record(r)) => {
                let _ = format::decode_embedding(r.embedding);
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
    let _ = reader.finish(rest);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = format::parse_embeddings(text);
        if let Ok(page) = serde_json::from_str::<format::GetPage>(text)
            && let Some(e) = page.embeddings
        {
            let _ = format::parse_embeddings(e.get());
        }
    }
}

/// WAL file names (as `wal push` / `wal fetch` get them from PostgreSQL):
/// every name type parses, and what parses prints back as the same name.
/// Also the long page header of a segment (its first 40 bytes).
pub fn wal_name(data: &[u8]) {
    use crate::sources::postgres::wal::{LongPageHeader, Lsn, SegmentName, Timeline, WalFile};
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(f) = s.parse::<WalFile>() {
            assert_eq!(f.to_string(), s, "a WAL file name round-trips");
            let _ = f.segment_data();
            let _ = f.timeline();
        }
        if let Ok(n) = s.parse::<SegmentName>() {
            for size in [1u64 << 20, 16 << 20, 1 << 30] {
                let size = crate::sources::postgres::wal::SegmentSize::new(size).expect("valid");
                if n.fits(size) {
                    let _ = n.start_lsn(size);
                    let _ = n.next(size);
                }
            }
        }
        if let Ok(l) = s.parse::<Lsn>() {
            let _ = l.to_string();
        }
        let _ = s.parse::<Timeline>();
    }
    if let Ok(h) = LongPageHeader::parse(data)
        && let Some(Ok(name)) = data
            .get(40..64)
            .map(|b| String::from_utf8_lossy(b).parse::<SegmentName>())
    {
        let _ = h.check_name(name);
    }
}

/// A timeline history file (`00000002.history`), as restore and `verify`
/// read it; the first 8 bytes name its timeline.
pub fn wal_history(data: &[u8]) {
    use crate::sources::postgres::wal::Timeline;
    use crate::sources::postgres::wal::continuity::parse_history;
    let (tli, text) = match data.split_first_chunk::<4>() {
        Some((t, rest)) => (u32::from_le_bytes(*t).max(1), rest),
        None => (2, data),
    };
    let text = String::from_utf8_lossy(text);
    let _ = parse_history(Timeline(tli), &text);
}

/// An incremental base backup's tar (`INCREMENTAL.` and `STRATA-INCR.`
/// members among plain ones) applied onto a small prior state in a
/// temporary directory, as a restore applies a chain. Tars holding links
/// are skipped: a link member followed by a file under it would let the
/// fuzzer write outside its directory (a base backup's tar is
/// pg_basebackup's, authenticated by the manifest, and holds none).
pub fn incremental_tar(data: &[u8]) {
    let mut archive = tar::Archive::new(data);
    let Ok(entries) = archive.entries() else {
        return;
    };
    for e in entries {
        match e {
            Ok(e)
                if !e.header().entry_type().is_symlink()
                    && !e.header().entry_type().is_hard_link() => {}
            _ => return,
        }
    }
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let prior = dir.path().join("data");
    let ok = std::fs::create_dir_all(prior.join("base/1")).is_ok()
        && std::fs::write(prior.join("base/1/1"), vec![1u8; 3 * 8192]).is_ok()
        && std::fs::write(prior.join("PG_VERSION"), b"15\n").is_ok();
    if ok {
        let _ = crate::sources::postgres::base::apply::apply(data, &prior);
    }
}

/// A base backup's tar through the `blocks` rewriter (against a fixed
/// parent: `base/1/1` of 2 blocks, start LSN 0/100), and the bytes as a
/// `backup_manifest` made into a basis and parsed for its sizes. The
/// rewriter must end or fail on any stream, never panic or hang.
pub fn base_blocks(data: &[u8]) {
    use crate::sources::postgres::base::basis::{Sizes, from_manifest};
    use crate::sources::postgres::base::blocks::{BlockFilter, BlockStats};
    use std::io::Read;
    let parent = Sizes::parse(
        br#"{"Files": [{"Path": "base/1/1", "Size": 16384}, {"Path": "global/1", "Size": 8192}]}"#,
    )
    .expect("the fixed parent parses");
    let stats = std::sync::Arc::new(std::sync::Mutex::new(BlockStats::default()));
    let mut f = BlockFilter::new(data, parent, 0x100, stats);
    let mut sink = [0u8; 4096];
    while let Ok(n) = f.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    if let Ok(basis) = from_manifest(data) {
        let _ = Sizes::parse(&basis);
    }
}

#[cfg(test)]
mod tests {
    //! The committed seed corpora through the entry points (and every
    //! input a fuzzer found that once crashed them, kept in the corpus).
    use super::*;

    fn corpus(target: &str, f: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "{target}: {} panics", p.display());
            n += 1;
        }
        assert!(n > 0, "{}: no seeds", dir.display());
    }

    #[test]
    fn config_corpus() {
        corpus("config", config);
    }

    #[test]
    fn manifest_corpus() {
        corpus("manifest", manifest);
    }

    #[test]
    fn time_corpus() {
        corpus("time", time);
    }

    #[test]
    fn rdb_corpus() {
        corpus("rdb", rdb);
    }

    #[test]
    fn chroma_export_corpus() {
        corpus("chroma_export", chroma_export);
    }

    #[test]
    fn wal_name_corpus() {
        corpus("wal_name", wal_name);
    }

    #[test]
    fn wal_history_corpus() {
        corpus("wal_history", wal_history);
    }

    #[test]
    fn base_blocks_corpus() {
        corpus("base_blocks", base_blocks);
    }

    #[test]
    fn incremental_tar_corpus() {
        corpus("incremental_tar", incremental_tar);
    }

    /// The incremental seeds apply cleanly, so the fuzzer starts from
    /// inputs that reach the block writes.
    #[test]
    fn incremental_seeds_apply() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/incremental_tar");
        for name in ["seed-postgres", "seed-strata", "seed-truncate"] {
            let data = std::fs::read(dir.join(name)).unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let prior = tmp.path().join("data");
            std::fs::create_dir_all(prior.join("base/1")).unwrap();
            std::fs::write(prior.join("base/1/1"), vec![1u8; 3 * 8192]).unwrap();
            let s = crate::sources::postgres::base::apply::apply(&data[..], &prior)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(s.files_patched > 0, "{name}: {s:?}");
        }
    }

    /// The manifest seeds are sealed to [`TEST_IDENTITY`], so the fuzzer
    /// starts from inputs that reach the sealed part.
    #[test]
    fn manifest_seeds_open_with_the_test_identity() {
        let (identities, _) = test_keys();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/manifest");
        for name in ["seed-redis-file.json", "seed-base-file.json"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let f = ManifestFile::parse(name, &bytes).unwrap();
            f.open(name, &identities)
                .unwrap_or_else(|e| panic!("{name}: {}", e.message));
        }
    }
}
