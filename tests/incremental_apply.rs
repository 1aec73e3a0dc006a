//! Issue 18 item 2: strata's applier of PostgreSQL's own incremental
//! backups (`pg_basebackup --incremental`, PostgreSQL 17+), checked
//! against PostgreSQL itself. A PostgreSQL 18 cluster with
//! `summarize_wal = on` takes a full tar backup, then changes (a table
//! that grew, one truncated by VACUUM, one dropped, a new database), then
//! an incremental tar backup, then more changes (the truncated table cut
//! again and grown again) and a second incremental. strata unpacks the
//! full tar and applies each incremental onto it as it streams (`restore
//! --delta`'s way), and restores the chain newest first, writing each
//! block once (a plain restore's way); `pg_combinebackup` combines the
//! same three backups. Every file must be identical, and a server started
//! on strata's newest-first result must hold exactly the rows of the
//! last incremental.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::pg::{PgCluster, PgOptions, chown_to_pg, pg_scratch_dir, use_newest_pg};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pg_basebackup -Ft -X fetch` into `dir` (base.tar and backup_manifest),
/// incremental on `parent`'s manifest when given.
fn basebackup(pg: &PgCluster, dir: &Path, parent: Option<&Path>) {
    let mut c = Command::new(pg.bin("pg_basebackup"));
    c.arg("-D")
        .arg(dir)
        .args(["-Ft", "-X", "fetch", "--checkpoint=fast", "--no-password"])
        .arg(format!("--dbname={}", pg.url("postgres")));
    if let Some(p) = parent {
        c.arg(format!(
            "--incremental={}",
            p.join("backup_manifest").display()
        ));
    }
    run(&mut c);
}

/// A tar-format backup extracted into a plain-format one (for
/// pg_combinebackup, which reads directories).
fn plain(tar_dir: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(tar_dir.join("base.tar"))
        .arg("-C")
        .arg(into));
    fs::copy(
        tar_dir.join("backup_manifest"),
        into.join("backup_manifest"),
    )
    .unwrap();
}

/// Every regular file under `dir`, with its contents, but the manifest.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, at: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(at).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                if rel != "backup_manifest" {
                    out.insert(rel, fs::read(&p).unwrap());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn postgres_incremental_tars_apply_as_pg_combinebackup_combines_them() {
    use_newest_pg();
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec!["summarize_wal = on".into()],
        name: "incr-apply",
        ..Default::default()
    });
    pg.psql(
        "postgres",
        "CREATE TABLE grew (id int PRIMARY KEY, pad text); \
         INSERT INTO grew SELECT g, repeat('g', 200) FROM generate_series(1, 20000) g; \
         CREATE TABLE shrank (id int, pad text); \
         INSERT INTO shrank SELECT g, repeat('s', 200) FROM generate_series(1, 20000) g; \
         CREATE TABLE dropped (id int); INSERT INTO dropped SELECT generate_series(1, 1000); \
         CHECKPOINT",
    );
    let root = pg_scratch_dir("incr-apply");
    let full = root.join("full");
    basebackup(&pg, &full, None);

    pg.psql(
        "postgres",
        "INSERT INTO grew SELECT g, repeat('h', 200) FROM generate_series(20001, 30000) g; \
         UPDATE grew SET pad = 'changed' WHERE id BETWEEN 100 AND 150; \
         DELETE FROM shrank WHERE id > 500; \
         DROP TABLE dropped",
    );
    // VACUUM cuts the emptied tail of the file (the truncation length)
    pg.psql("postgres", "VACUUM shrank");
    pg.psql("postgres", "CREATE DATABASE fresh");
    pg.psql(
        "fresh",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 777)",
    );
    pg.psql("postgres", "CHECKPOINT");
    let incr = root.join("incr");
    basebackup(&pg, &incr, Some(&full));

    // the incremental holds PostgreSQL's INCREMENTAL. members
    let listing = run(Command::new("tar").arg("-tf").arg(incr.join("base.tar")));
    assert!(listing.contains("/INCREMENTAL."), "{listing}");

    // a second incremental: `shrank` cut again by VACUUM, then grown
    // again, so its truncation length sits below blocks the full holds
    pg.psql("postgres", "DELETE FROM shrank WHERE id > 100");
    pg.psql("postgres", "VACUUM shrank");
    pg.psql(
        "postgres",
        "INSERT INTO shrank SELECT g, repeat('t', 200) FROM generate_series(1001, 1400) g; \
         UPDATE grew SET pad = 'again' WHERE id BETWEEN 29000 AND 29010; CHECKPOINT",
    );
    let incr2 = root.join("incr2");
    basebackup(&pg, &incr2, Some(&incr));

    // strata: the full unpacked, the incremental applied as it streams
    let ours = root.join("ours");
    strata::sources::postgres::delta::unpack_new(
        fs::File::open(full.join("base.tar")).unwrap(),
        &ours,
    )
    .unwrap();
    let stats = strata::sources::postgres::base::apply::apply(
        fs::File::open(incr.join("base.tar")).unwrap(),
        &ours,
    )
    .unwrap();
    assert!(stats.files_patched > 0 && stats.removed > 0, "{stats:?}");
    strata::sources::postgres::base::apply::apply(
        fs::File::open(incr2.join("base.tar")).unwrap(),
        &ours,
    )
    .unwrap();

    // strata, newest first (a plain restore of a chain): each block
    // written once
    let newest_first = root.join("newest-first");
    fs::create_dir_all(&newest_first).unwrap();
    let mut combine = strata::sources::postgres::base::combine::Combine::new(&newest_first);
    let mut written = vec![];
    for b in [&incr2, &incr, &full] {
        let s = combine
            .add(fs::File::open(b.join("base.tar")).unwrap())
            .unwrap();
        written.push(s.blocks_written);
    }
    combine.finish().unwrap();

    // PostgreSQL: pg_combinebackup of the same two backups
    let (full_plain, incr_plain, incr2_plain) = (
        root.join("full-plain"),
        root.join("incr-plain"),
        root.join("incr2-plain"),
    );
    plain(&full, &full_plain);
    plain(&incr, &incr_plain);
    plain(&incr2, &incr2_plain);
    let combined = root.join("combined");
    run(Command::new(pg.bin("pg_combinebackup"))
        .arg(&full_plain)
        .arg(&incr_plain)
        .arg(&incr2_plain)
        .arg("-o")
        .arg(&combined));

    let b = files(&combined);
    // no block written twice: at most the blocks of the result
    let held: u64 = b.values().map(|d| d.len().div_ceil(8192) as u64).sum();
    assert!(
        written.iter().sum::<u64>() <= held,
        "{written:?} blocks written, {held} held"
    );
    assert_eq!(
        files(&newest_first),
        b,
        "newest first against pg_combinebackup"
    );
    let a = files(&ours);
    let only = |x: &BTreeMap<String, Vec<u8>>, y: &BTreeMap<String, Vec<u8>>| -> Vec<String> {
        x.keys().filter(|k| !y.contains_key(*k)).cloned().collect()
    };
    assert!(
        only(&a, &b).is_empty() && only(&b, &a).is_empty(),
        "only in strata's: {:?}; only in pg_combinebackup's: {:?}",
        only(&a, &b),
        only(&b, &a)
    );
    let differ: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert!(differ.is_empty(), "files that differ: {differ:?}");
    let label = String::from_utf8_lossy(&a["backup_label"]).into_owned();
    assert!(!label.contains("INCREMENTAL"), "{label}");

    // and a server on strata's result holds the last incremental's rows
    pg.stop();
    chown_to_pg(&newest_first);
    let restored = PgCluster::start_existing(
        PgOptions {
            name: "incr-apply-restored",
            ..Default::default()
        },
        PathBuf::from(&newest_first),
    );
    restored.wait_until_primary(std::time::Duration::from_secs(60));
    assert_eq!(
        restored.psql(
            "postgres",
            "SELECT count(*), count(*) FILTER (WHERE pad = 'changed'), \
             count(*) FILTER (WHERE pad = 'again') FROM grew"
        ),
        "30000|51|11"
    );
    assert_eq!(
        restored.psql("postgres", "SELECT count(*), max(id) FROM shrank"),
        "500|1400"
    );
    assert_eq!(
        restored.psql("postgres", "SELECT to_regclass('dropped') IS NULL"),
        "t"
    );
    assert_eq!(restored.psql("fresh", "SELECT count(*) FROM t"), "777");
    assert_eq!(
        restored.psql(
            "postgres",
            "SELECT count(*) FROM (SELECT * FROM grew ORDER BY id) s"
        ),
        "30000"
    );
}
