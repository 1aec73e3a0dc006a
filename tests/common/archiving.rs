//! A strata repository whose config a PostgreSQL cluster can use for
//! `archive_command` (the server runs as the `postgres` OS user, so the
//! key, config and repository live in a directory it owns).

use std::fs;
use std::path::PathBuf;
use std::process::Output;

use super::pg::{chown_to_pg, pg_scratch_dir};
use super::{strata_bin, strata_process};

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
