//! S3 Object Lock per tier, against a real S3 server that implements it
//! (moto's server: s3s-fs has no Object Lock). A tier with
//! `object_lock = "governance"` writes every object of its backups under
//! retention for the tier's retention period; prune keeps a backup whole
//! while any of its objects is locked; misconfigurations are refused
//! before anything is written.

mod common;

use std::fs;

use chrono::{DateTime, Duration, Utc};
use common::cli::{RepoSpec, Strata};
use common::moto::moto;
use common::pg::shared_pg;

/// A setup on `bucket` of the moto server, backing up its own database.
fn on_bucket(name: &str, bucket: &str, prefix: &str) -> Strata {
    let pg = shared_pg();
    let db = name.replace('-', "_");
    pg.create_db(&db);
    let m = moto();
    Strata::with_repo(
        name,
        RepoSpec::S3 {
            endpoint: m.endpoint.clone(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            env: m.env_vars(),
        },
        &[("app", pg.url(&db))],
    )
}

fn add_tiers(s: &Strata, tiers: &str) {
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    cfg += tiers;
    fs::write(&s.config, cfg).unwrap();
}

#[test]
fn locked_tier_objects_are_kept_by_prune_until_their_lock_expires() {
    let m = moto();
    m.create_bucket("strata-locked", true);
    let s = on_bucket("object-lock", "strata-locked", "repo");
    add_tiers(
        &s,
        "\n[tiers.daily]\nkeep_within = \"1d\"\nobject_lock = \"governance\"\n\
         \n[tiers.scratch]\nkeep_last = 1\n",
    );
    s.init();
    let before = Utc::now();
    let mut daily = Vec::new();
    let mut scratch = Vec::new();
    for _ in 0..2 {
        let o = s.run(&["--json", "backup", "app", "--tier", "daily"]).ok();
        daily.push(o.json()["id"].as_str().unwrap().to_string());
        let o = s
            .run(&["--json", "backup", "app", "--tier", "scratch"])
            .ok();
        scratch.push(o.json()["id"].as_str().unwrap().to_string());
    }

    // Every object of a daily backup, its manifest included, is locked for
    // the tier's retention period; scratch backups, the repository marker
    // and lock files are not.
    let locks = m.locks("strata-locked", "repo/");
    let mut locked_daily = 0;
    for (key, mode, until) in &locks {
        let of_daily = daily.iter().any(|id| key.contains(id.as_str()));
        if of_daily {
            assert_eq!(mode, "GOVERNANCE", "{key}: {locks:?}");
            let until: DateTime<Utc> = until.parse().unwrap();
            assert!(
                until > before + Duration::hours(23) && until < Utc::now() + Duration::days(1),
                "{key} locked until {until}"
            );
            locked_daily += 1;
        } else {
            assert_eq!(
                (mode.as_str(), until.as_str()),
                ("-", "-"),
                "{key}: {locks:?}"
            );
            assert!(!key.starts_with("repo/locks/") || mode == "-", "{key}");
        }
    }
    // two manifests and at least one data object each
    assert!(locked_daily >= 4, "{locks:?}");

    // Three days on, retention would delete the older daily and the older
    // scratch backup; the daily one is still locked (locks run on the
    // store's clock, not on --at), so it is kept whole.
    let at = (Utc::now() + Duration::days(3)).to_rfc3339();
    let o = s.run(&["--json", "prune", "--dry-run", "--at", &at]).ok();
    let plan = o.json();
    let decisions: Vec<&serde_json::Value> = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["backups"].as_array().unwrap())
        .collect();
    let d0 = decisions
        .iter()
        .find(|d| d["id"] == daily[0].as_str())
        .unwrap();
    assert_eq!(d0["action"], "delete", "{o}");
    assert!(d0["locked_until"].is_string(), "{o}");

    let o = s.run(&["prune", "--allow-future-at", "--at", &at]).ok();
    assert!(
        o.stdout.contains(&format!(
            "kept         app          {}  (object lock until",
            daily[0]
        )),
        "{o}"
    );
    assert!(
        o.stdout
            .contains(&format!("deleted      app          {}", scratch[0])),
        "{o}"
    );
    let ids = s.list_ids();
    assert!(
        ids.contains(&daily[0]) && ids.contains(&daily[1]),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&scratch[0]) && ids.contains(&scratch[1]),
        "{ids:?}"
    );
    // Nothing of the locked backup was touched.
    let after = m.locks("strata-locked", "repo/");
    for l in locks.iter().filter(|l| l.0.contains(daily[0].as_str())) {
        assert!(after.contains(l), "{l:?} is gone");
    }
    s.run(&["verify"]).ok();
}

#[test]
fn object_lock_needs_a_bucket_with_object_lock_enabled() {
    let m = moto();
    m.create_bucket("strata-unlocked", false);
    let s = on_bucket("object-lock-off", "strata-unlocked", "repo");
    add_tiers(
        &s,
        "\n[tiers.daily]\nkeep_daily = 7\nobject_lock = \"compliance\"\n",
    );
    s.init();
    let o = s.run(&["backup", "app", "--tier", "daily"]).expect_code(2);
    assert!(
        o.stderr.contains("does not have S3 Object Lock enabled"),
        "{o}"
    );
    assert!(o.stderr.contains("object-lock-enabled-for-bucket"), "{o}");
    assert!(s.list_ids().is_empty());
}

#[test]
fn object_lock_config_errors_name_the_key() {
    let pg = shared_pg();
    let s = Strata::local("object-lock-config", &[("app", pg.url("postgres"))]);
    let base = fs::read_to_string(&s.config).unwrap();
    let check = |tiers: &str, want: &str| {
        fs::write(&s.config, format!("{base}{tiers}")).unwrap();
        let o = s.run(&["list"]).expect_code(2);
        assert!(o.stderr.contains(want), "{tiers}\n{o}");
    };
    check(
        "\n[tiers.daily]\nkeep_within = \"30d\"\nobject_lock = \"governance\"\n",
        "tiers.daily.object_lock: object lock needs an S3 repository",
    );
    check(
        "\n[tiers.daily]\nkeep_within = \"30d\"\nobject_lock = \"strict\"\n",
        "\"strict\" is not a lock mode; use \"governance\" or \"compliance\"",
    );
    check(
        "\n[tiers.daily]\nkeep_last = 3\nobject_lock = \"governance\"\n",
        "this tier has none",
    );
}

#[test]
fn wal_tier_object_lock_locks_archived_wal() {
    let m = moto();
    m.create_bucket("strata-wal-locked", true);
    let s = on_bucket("object-lock-wal", "strata-wal-locked", "repo");
    add_tiers(
        &s,
        "\n[tiers.wal]\nkind = \"wal\"\nkeep_within = \"7d\"\nobject_lock = \"compliance\"\n",
    );
    s.init();
    // A timeline history file: archived like any WAL file, no segment
    // header needed.
    let file = s.dir.join("00000002.history");
    fs::write(&file, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let before = Utc::now();
    s.run(&[
        "wal",
        "push",
        "--source",
        "app",
        &file.display().to_string(),
    ])
    .ok();
    let locks = m.locks("strata-wal-locked", "repo/wal/");
    let history: Vec<_> = locks
        .iter()
        .filter(|l| l.0.contains("00000002.history"))
        .collect();
    assert_eq!(history.len(), 2, "the file and its record: {locks:?}");
    for (key, mode, until) in history {
        assert_eq!(mode, "COMPLIANCE", "{key}");
        let until: DateTime<Utc> = until.parse().unwrap();
        assert!(
            until > before + Duration::days(6),
            "{key} locked until {until}"
        );
    }
    // No base backup: prune keeps the whole archive and says why.
    let o = s.run(&["prune"]).ok();
    assert!(
        o.stdout.contains("no kept base backup of this source"),
        "{o}"
    );
}

/// The storage layer directly: a locked handle puts retention on single
/// and multipart uploads (the latter with the CRC32 checksums S3 requires
/// for locked uploads), never on lock files, and reads it back.
#[tokio::test(flavor = "multi_thread")]
async fn locked_store_uploads_small_and_multipart_objects() {
    use bytes::Bytes;
    use strata::storage::s3::{S3Config, S3Storage};
    use strata::storage::{Body, LockMode, ObjectLock, PutMode, Storage};

    let m = tokio::task::spawn_blocking(|| {
        let m = moto();
        m.create_bucket("strata-store-locked", true);
        m.create_bucket("strata-store-plain", false);
        m
    })
    .await
    .unwrap();
    for (k, v) in m.env_vars() {
        // Same values for every test of this binary; children get them
        // explicitly too.
        unsafe { std::env::set_var(k, v) };
    }
    let connect = |bucket: &str| {
        S3Storage::connect(S3Config {
            bucket: bucket.into(),
            prefix: "p".into(),
            endpoint: Some(m.endpoint.clone()),
            region: Some("us-east-1".into()),
            path_style: true,
            ..Default::default()
        })
    };
    let plain = connect("strata-store-plain").await.unwrap();
    assert!(!plain.object_lock_enabled().await.unwrap());
    let store = connect("strata-store-locked").await.unwrap();
    assert!(store.object_lock_enabled().await.unwrap());
    let until = Utc::now() + Duration::days(1);
    let locked = store
        .with_object_lock(ObjectLock {
            mode: LockMode::Governance,
            retain_until: until,
        })
        .expect("S3 can lock");

    locked
        .put_bytes("small", Bytes::from_static(b"data"), PutMode::Create)
        .await
        .unwrap();
    let got = locked.locked_until("small").await.unwrap().expect("locked");
    assert!((got - until).num_seconds().abs() <= 1, "{got} vs {until}");
    locked
        .put_bytes(
            "locks/repo.json",
            Bytes::from_static(b"{}"),
            PutMode::Create,
        )
        .await
        .unwrap();
    assert_eq!(locked.locked_until("locks/repo.json").await.unwrap(), None);
    assert_eq!(locked.locked_until("missing").await.unwrap(), None);

    // 40 MiB: three parts of a multipart upload.
    let big: Vec<u8> = (0..40u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let big = Bytes::from(big);
    let (tx, body) = Body::channel();
    let data = big.clone();
    let producer = tokio::spawn(async move {
        for c in data.chunks(1 << 20) {
            assert!(tx.send(Bytes::copy_from_slice(c)).await);
        }
        tx.finish().await;
    });
    let meta = locked.put("big", body, PutMode::Create).await.unwrap();
    producer.await.unwrap();
    assert_eq!(meta.size, big.len() as u64);
    assert_eq!(locked.get_bytes("big").await.unwrap(), big);
}

/// A base backup under a tier's object lock locks the WAL that makes it
/// consistent (its start to its stop segment, object and record) as long
/// as itself, although that WAL was archived under the WAL tier's shorter
/// lock; WAL before it keeps the WAL tier's lock.
#[test]
fn base_backup_locks_its_wal_as_long_as_itself() {
    use common::pg::{PgCluster, PgOptions, chown_to_pg, pg_scratch_dir};
    let m = moto();
    m.create_bucket("strata-base-locked", true);
    // the server's archive_command reads a copy of the config it can open
    let pg_dir = pg_scratch_dir("object-lock-base");
    let pg_cfg = pg_dir.join("strata.toml");
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![
            "archive_mode = on".into(),
            format!(
                "archive_command = '{} --config {} wal push --source app %p'",
                common::strata_bin().display(),
                pg_cfg.display()
            ),
        ],
        name: "object-lock-base",
        env: m.env_vars(),
    });
    let s = Strata::with_repo(
        "object-lock-base",
        RepoSpec::S3 {
            endpoint: m.endpoint.clone(),
            bucket: "strata-base-locked".into(),
            prefix: "repo".into(),
            env: m.env_vars(),
        },
        &[("app", pg.url("postgres"))],
    );
    add_tiers(
        &s,
        "\n[tiers.wal]\nkind = \"wal\"\nkeep_within = \"1d\"\nobject_lock = \"governance\"\n\
         \n[tiers.weekly]\nkind = \"base\"\nkeep_within = \"30d\"\nobject_lock = \"governance\"\n",
    );
    s.init();
    fs::copy(&s.config, &pg_cfg).unwrap();
    chown_to_pg(&pg_dir);

    // one segment archived before the backup
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let early = pg.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.psql("postgres", "SELECT pg_switch_wal()");
    pg.wait_for(
        "postgres",
        &format!("SELECT coalesce(last_archived_wal, '') >= '{early}' FROM pg_stat_archiver"),
        "t",
        std::time::Duration::from_secs(60),
    );
    let before = Utc::now();
    let first = pg.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    s.run(&["backup", "app", "--tier", "weekly"]).ok();
    let last = pg.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");

    let locks = m.locks("strata-base-locked", "repo/wal/app/");
    let until = |key: &str| -> DateTime<Utc> {
        let l = locks
            .iter()
            .find(|l| l.0 == key)
            .unwrap_or_else(|| panic!("{key} not archived: {locks:?}"));
        assert_eq!(l.1, "GOVERNANCE", "{l:?}");
        l.2.parse().unwrap()
    };
    let long = before + Duration::days(29);
    let kept_long: Vec<&str> = locks
        .iter()
        .filter(|l| l.2.parse::<DateTime<Utc>>().is_ok_and(|u| u > long))
        .map(|l| l.0.as_str())
        .collect();
    assert!(
        kept_long.len() >= 2,
        "no WAL locked like the backup: {locks:?}"
    );
    for key in &kept_long {
        let name = key.rsplit('/').next().unwrap().trim_end_matches(".json");
        assert!(
            name >= first.as_str() && name <= last.as_str(),
            "{key} is not between {first} and {last}"
        );
        // object and record alike
        let other = if key.ends_with(".json") {
            key.trim_end_matches(".json").to_string()
        } else {
            format!("{key}.json")
        };
        assert!(kept_long.contains(&other.as_str()), "{other}: {locks:?}");
    }
    let early_key = format!("repo/wal/app/00000001/{early}");
    assert!(until(&early_key) < before + Duration::days(2), "{locks:?}");
    assert!(until(&format!("{early_key}.json")) < before + Duration::days(2));
}

/// Issue 18 item 3: an incremental base backup under a tier's object lock
/// locks every backup of its chain (data, basis and manifest) as long as
/// itself, although the full was written under a shorter lock.
#[test]
fn incremental_base_backup_locks_its_chain_as_long_as_itself() {
    use common::pg::{PgCluster, PgOptions, chown_to_pg, pg_scratch_dir};
    let m = moto();
    m.create_bucket("strata-chain-locked", true);
    let pg_dir = pg_scratch_dir("object-lock-chain");
    let pg_cfg = pg_dir.join("strata.toml");
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![
            "archive_mode = on".into(),
            format!(
                "archive_command = '{} --config {} wal push --source app %p'",
                common::strata_bin().display(),
                pg_cfg.display()
            ),
        ],
        name: "object-lock-chain",
        env: m.env_vars(),
    });
    let s = Strata::with_repo(
        "object-lock-chain",
        RepoSpec::S3 {
            endpoint: m.endpoint.clone(),
            bucket: "strata-chain-locked".into(),
            prefix: "repo".into(),
            env: m.env_vars(),
        },
        &[("app", pg.url("postgres"))],
    );
    add_tiers(
        &s,
        "\n[tiers.weekly]\nkind = \"base\"\nkeep_within = \"1d\"\nobject_lock = \"governance\"\n\
         \n[tiers.nightly]\nkind = \"base\"\nincremental = true\nkeep_within = \"30d\"\nobject_lock = \"governance\"\n",
    );
    s.init();
    fs::copy(&s.config, &pg_cfg).unwrap();
    chown_to_pg(&pg_dir);
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    let before = Utc::now();
    let full = s.run(&["--json", "backup", "app", "--tier", "weekly"]).ok();
    let full = full.json();
    let full_id = full["id"].as_str().unwrap();
    pg.psql("postgres", "INSERT INTO t VALUES (0)");
    let inc = s
        .run(&["--json", "backup", "app", "--tier", "nightly"])
        .ok();
    let inc = inc.json();
    assert_eq!(inc["incremental"]["parent"], full_id, "{inc}");

    let locks = m.locks("strata-chain-locked", "repo/");
    let until = |key: &str| -> DateTime<Utc> {
        let l = locks
            .iter()
            .find(|l| l.0 == key)
            .unwrap_or_else(|| panic!("{key} not locked: {locks:?}"));
        l.2.parse().unwrap()
    };
    for key in [
        format!("repo/backups/app/{full_id}/base.tar"),
        format!("repo/backups/app/{full_id}/basis.json"),
        format!("repo/manifests/app/{full_id}.json"),
    ] {
        assert!(
            until(&key) > before + Duration::days(29),
            "{key}: {locks:?}"
        );
    }
}
