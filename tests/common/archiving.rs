//! A strata repository whose config a PostgreSQL cluster can use for
//! `archive_command` (the server runs as the `postgres` OS user, so the
//! key, config and repository live in a directory it owns).

use std::fs;
use std::path::PathBuf;
use std::process::Output;

use super::pg::{PgCluster, PgOptions, chown_to_pg, pg_scratch_dir};
use super::{strata_bin, strata_process};
use strata::catalog::ManifestFile;

pub struct Repo {
    pub dir: PathBuf,
    pub cfg: PathBuf,
    pub recipient: String,
}

impl Repo {
    pub fn new(name: &str) -> Repo {
        let dir = pg_scratch_dir(name);
        let recipient = super::generate_key(&dir.join("key.txt"));
        let repo = Repo {
            cfg: dir.join("strata.toml"),
            dir,
            recipient,
        };
        // the server's port is not known yet: written again once it runs
        repo.write_config("postgres://postgres@127.0.0.1:1/postgres");
        let out = repo.strata(&["init"]);
        assert!(out.status.success(), "init: {}", text(&out));
        chown_to_pg(&repo.dir);
        repo
    }

    pub fn write_config(&self, url: &str) {
        fs::write(
            &self.cfg,
            format!(
                "[repository]\nurl = \"file://{}\"\n\n[encryption]\nrecipients = [\"{}\"]\nidentity_file = \"key.txt\"\n\n\
                 [sources.main]\nkind = \"postgres\"\nurl = \"{url}\"\n",
                self.dir.join("repo").display(),
                self.recipient
            ),
        )
        .unwrap();
    }

    pub fn strata(&self, args: &[&str]) -> Output {
        strata_process()
            .env_remove("STRATA_LOG")
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_IDENTITY_FILE")
            .arg("--config")
            .arg(&self.cfg)
            .args(args)
            .output()
            .expect("spawn strata")
    }

    /// The stored tar of backup `id`, decrypted, as (member name, data).
    pub fn stored_members(&self, id: &str) -> Vec<(String, Vec<u8>)> {
        let root = self.dir.join("repo");
        let mkey = format!("manifests/main/{id}.json");
        let file = ManifestFile::parse(&mkey, &fs::read(root.join(&mkey)).unwrap()).unwrap();
        let ids = strata::keys::load_identities(&self.dir.join("key.txt")).unwrap();
        let m = file.open(&mkey, &ids).unwrap();
        let rec = m.object("base.tar").unwrap();
        let data = fs::read(root.join(&rec.key)).unwrap();
        let mut tar = Vec::new();
        strata::pipeline::decode(
            rec,
            &data[..],
            &ids,
            &mut tar,
            &strata::progress::Progress::hidden(),
        )
        .unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut d = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut d).unwrap();
                (name, d)
            })
            .collect()
    }

    /// The plain basis of backup `id`.
    pub fn basis(&self, id: &str) -> Vec<u8> {
        fs::read(self.dir.join(format!("repo/backups/main/{id}/basis.json"))).unwrap()
    }

    /// `strata --json backup main --kind base ARGS…`, which must succeed.
    pub fn base_backup(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json", "backup", "main", "--kind", "base"];
        all.extend_from_slice(args);
        let out = self.strata(&all);
        assert!(out.status.success(), "backup {args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A cluster archiving into this repository (with `extra` settings),
    /// the config pointed at it.
    pub fn start_archiving(&self, name: &'static str, extra: &[&str]) -> PgCluster {
        let mut conf = self.archive_conf();
        conf.extend(extra.iter().map(|s| s.to_string()));
        let pg = PgCluster::start(PgOptions {
            extra_conf: conf,
            name,
            ..Default::default()
        });
        self.write_config(&pg.url("postgres"));
        pg
    }

    pub fn archive_conf(&self) -> Vec<String> {
        vec![
            "archive_mode = on".into(),
            format!(
                "archive_command = '{} --config {} wal push %p'",
                strata_bin().display(),
                self.cfg.display()
            ),
            "archive_timeout = 0".into(),
        ]
    }
}

pub use super::text;
