//! issue 16 item 1: strata against a PostgreSQL server that accepts TLS
//! connections only (`ssl = on`, `hostssl` lines only in pg_hba.conf), as
//! managed services run it. The test makes its own CA, a server
//! certificate for 127.0.0.1 only (so `localhost` is a name the
//! certificate does not list), a client certificate for a role that
//! authenticates by certificate, and a second CA nobody trusts, with the
//! `openssl` CLI. Checks that strata's own connections and its children
//! (pg_dump, pg_restore, psql) honour libpq's TLS parameters and the
//! `PGSSL*` variables, and that each refusal names its cause and what to
//! set.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::archiving::{Repo, text};
use common::cli::{Output, Strata, run_strata};
use common::pg::{PgCluster, PgOptions, chown_to_pg, pg_ctl_at, pg_scratch_dir, psql_at};
use common::{at_exit, free_port, pki};

/// The role that logs in with its client certificate (`cert` in pg_hba).
const CERT_USER: &str = "certuser";

struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

fn make_ca(dir: &Path, name: &str) {
    pki::make_ca(dir, name, &format!("strata test {name}"));
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = pg_scratch_dir("tls-certs");
        make_ca(&dir, "ca");
        make_ca(&dir, "other-ca");
        // 127.0.0.1 only: `localhost` is a name the certificate lacks
        pki::make_leaf(
            &dir,
            "server",
            "ca",
            "strata test server",
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        );
        let client_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                          extendedKeyUsage=clientAuth\n";
        pki::make_leaf(&dir, "client", "ca", CERT_USER, client_ext);
        pki::make_leaf(&dir, "stranger", "other-ca", CERT_USER, client_ext);
        // the server reads its key as `postgres` (when root) and refuses
        // one others can read
        chown_to_pg(&dir.join("server.key"));
        // a server known by a DNS name only (reached with hostaddr)
        pki::make_leaf(
            &dir,
            "server-dns",
            "ca",
            "db.test",
            "subjectAltName=DNS:db.test\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        );
        chown_to_pg(&dir.join("server-dns.key"));
        let hba = dir.join("tls_hba.conf");
        fs::write(
            &hba,
            format!(
                "local all all trust\n\
                 hostssl all {CERT_USER} 127.0.0.1/32 cert\n\
                 hostssl all {CERT_USER} ::1/128 cert\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostssl all all ::1/128 trust\n\
                 hostssl replication all 127.0.0.1/32 trust\n"
            ),
        )
        .unwrap();
        chown_to_pg(&hba);
        Certs { dir }
    })
}

/// Server settings: TLS on, client certificates checked against our CA,
/// `hostssl` lines only.
fn tls_conf(server_cert: &str) -> Vec<String> {
    let c = certs();
    vec![
        "ssl = on".into(),
        format!(
            "ssl_cert_file = '{}'",
            c.path(&format!("{server_cert}.crt"))
        ),
        format!("ssl_key_file = '{}'", c.path(&format!("{server_cert}.key"))),
        format!("ssl_ca_file = '{}'", c.path("ca.crt")),
        format!("hba_file = '{}'", c.path("tls_hba.conf")),
    ]
}

/// The TLS-only server, with a database `tls_src` holding a small table
/// and the certificate-authenticated role.
fn tls_pg() -> &'static PgCluster {
    static PG: OnceLock<PgCluster> = OnceLock::new();
    PG.get_or_init(|| {
        let pg = PgCluster::start(PgOptions {
            name: "tls",
            extra_conf: tls_conf("server"),
            ..Default::default()
        });
        pg.create_db("tls_src");
        pg.psql(
            "tls_src",
            "CREATE TABLE notes (id int PRIMARY KEY, body text); \
             INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 500) g",
        );
        pg.psql(
            "postgres",
            &format!("CREATE ROLE {CERT_USER} LOGIN SUPERUSER"),
        );
        pg
    })
}

/// A URL of the TLS server. Host `localhost` connects to 127.0.0.1 too
/// (`hostaddr`, so the name's resolution does not matter) but is the name
/// the certificate is checked against.
fn url(host: &str, user: &str, db: &str, params: &str) -> String {
    let mut params = params.to_string();
    if host == "localhost" {
        params = format!("hostaddr=127.0.0.1&{params}");
    }
    let query = if params.is_empty() {
        String::new()
    } else {
        format!("?{params}")
    };
    format!("postgres://{user}@{host}:{}/{db}{query}", tls_pg().port)
}

fn content(pg: &PgCluster, db: &str) -> String {
    pg.psql(
        db,
        "SELECT count(*), md5(string_agg(id || ':' || body, ',' ORDER BY id)) FROM notes",
    )
}

/// A setup backing up `url` as source `app`, initialised.
fn strata(name: &str, url: String) -> Strata {
    let s = Strata::local(name, &[("app", url)]);
    s.init();
    s
}

#[track_caller]
fn refused(o: Output, in_message: &[&str], in_hint: &str) {
    let o = o.expect_code(5);
    eprintln!("{}", o.stderr.trim());
    let (msg, hint) = o
        .stderr
        .split_once("HINT:")
        .unwrap_or_else(|| panic!("no hint\n{o}"));
    for want in in_message {
        assert!(msg.contains(want), "message lacks {want:?}\n{o}");
    }
    assert!(hint.contains(in_hint), "hint lacks {in_hint:?}\n{o}");
}

#[test]
fn backup_and_restore_with_verify_full() {
    let pg = tls_pg();
    let ca = certs().path("ca.crt");
    let s = strata(
        "tls-full",
        url(
            "127.0.0.1",
            "postgres",
            "tls_src",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    );
    s.backup("app");
    s.run(&[
        "restore",
        "app",
        "--to-database",
        "tls_restored",
        "--create",
    ])
    .ok();
    assert_eq!(content(pg, "tls_restored"), content(pg, "tls_src"));
    assert!(content(pg, "tls_src").starts_with("500|"));
}

#[test]
fn untrusted_ca_is_refused() {
    tls_pg();
    let other = certs().path("other-ca.crt");
    for mode in ["verify-full", "verify-ca", "require"] {
        // require with a root file checks the chain, as libpq does
        let s = strata(
            "tls-untrusted",
            url(
                "127.0.0.1",
                "postgres",
                "tls_src",
                &format!("sslmode={mode}&sslrootcert={other}"),
            ),
        );
        refused(
            s.run(&["backup", "app"]),
            &["certificate is not trusted", "other-ca.crt"],
            "sslrootcert",
        );
    }
}

#[test]
fn wrong_host_name_is_refused_by_verify_full_only() {
    let pg = tls_pg();
    let ca = certs().path("ca.crt");
    // the certificate names 127.0.0.1, not localhost
    let s = strata(
        "tls-wrong-host",
        url(
            "localhost",
            "postgres",
            "tls_src",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
    );
    refused(
        s.run(&["backup", "app"]),
        &["host name mismatch", "127.0.0.1", "localhost"],
        "host name",
    );
    // verify-ca checks the chain, not the name: strata and pg_dump agree
    let s = strata(
        "tls-verify-ca",
        url(
            "localhost",
            "postgres",
            "tls_src",
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
    );
    s.backup("app");
    s.run(&[
        "restore",
        "app",
        "--to-database",
        "tls_restored_ca",
        "--create",
    ])
    .ok();
    assert_eq!(content(pg, "tls_restored_ca"), content(pg, "tls_src"));
}

#[test]
fn client_certificate_authentication() {
    let pg = tls_pg();
    let c = certs();
    let base = format!("sslmode=verify-full&sslrootcert={}", c.path("ca.crt"));
    let s = strata(
        "tls-client-cert",
        url(
            "127.0.0.1",
            CERT_USER,
            "tls_src",
            &format!(
                "{base}&sslcert={}&sslkey={}",
                c.path("client.crt"),
                c.path("client.key")
            ),
        ),
    );
    s.backup("app");
    s.run(&[
        "restore",
        "app",
        "--to-database",
        "tls_restored_cert",
        "--create",
    ])
    .ok();
    assert_eq!(content(pg, "tls_restored_cert"), content(pg, "tls_src"));

    // no certificate sent: the server's pg_hba `cert` line refuses
    let s = strata(
        "tls-no-client-cert",
        url("127.0.0.1", CERT_USER, "tls_src", &base),
    );
    refused(
        s.run(&["backup", "app"]),
        &["requires a client certificate"],
        "sslcert",
    );
    // a certificate from a CA the server does not trust
    let s = strata(
        "tls-stranger-cert",
        url(
            "127.0.0.1",
            CERT_USER,
            "tls_src",
            &format!(
                "{base}&sslcert={}&sslkey={}",
                c.path("stranger.crt"),
                c.path("stranger.key")
            ),
        ),
    );
    refused(
        s.run(&["backup", "app"]),
        &["refused the client certificate"],
        "ssl_ca_file",
    );
}

/// Keys strata's own connections cannot or must not use: one others may
/// read (libpq refuses it too) and one encrypted with `sslpassword` (the
/// password never shown).
#[test]
fn unusable_client_keys_are_refused_before_connecting() {
    tls_pg();
    let c = certs();
    let open_key = c.dir.join("client-open.key");
    fs::copy(c.dir.join("client.key"), &open_key).unwrap();
    fs::set_permissions(&open_key, fs::Permissions::from_mode(0o644)).unwrap();
    pki::openssl(
        &c.dir,
        &[
            "pkey",
            "-in",
            "client.key",
            "-out",
            "client-enc.key",
            "-aes256",
            "-passout",
            "pass:s3cret-pass",
        ],
    );
    fs::set_permissions(
        c.dir.join("client-enc.key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let base = format!(
        "sslmode=verify-full&sslrootcert={}&sslcert={}",
        c.path("ca.crt"),
        c.path("client.crt")
    );
    let s = strata(
        "tls-open-key",
        url(
            "127.0.0.1",
            CERT_USER,
            "tls_src",
            &format!("{base}&sslkey={}", c.path("client-open.key")),
        ),
    );
    refused(
        s.run(&["backup", "app"]),
        &["group or world access"],
        "chmod 600",
    );
    let s = strata(
        "tls-encrypted-key",
        url(
            "127.0.0.1",
            CERT_USER,
            "tls_src",
            &format!(
                "{base}&sslkey={}&sslpassword=s3cret-pass",
                c.path("client-enc.key")
            ),
        ),
    );
    let o = s.run(&["backup", "app"]);
    assert!(
        !o.all().contains("s3cret-pass"),
        "the key's password was shown\n{o}"
    );
    refused(o, &["is encrypted"], "openssl pkey");
}

#[test]
fn pgsslmode_and_friends_from_the_environment() {
    tls_pg();
    let c = certs();
    let env = |s: &mut Strata, vars: &[(&str, String)]| {
        s.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.clone())));
    };
    // the environment alone: an untrusted root is refused, so it was read
    let mut s = strata(
        "tls-env-untrusted",
        url("127.0.0.1", "postgres", "tls_src", ""),
    );
    env(
        &mut s,
        &[
            ("PGSSLMODE", "verify-full".into()),
            ("PGSSLROOTCERT", c.path("other-ca.crt")),
        ],
    );
    refused(
        s.run(&["backup", "app"]),
        &["certificate is not trusted"],
        "sslrootcert",
    );
    // and the right one works, for strata and its children alike
    let mut s = strata("tls-env-ok", url("127.0.0.1", CERT_USER, "tls_src", ""));
    env(
        &mut s,
        &[
            ("PGSSLMODE", "verify-full".into()),
            ("PGSSLROOTCERT", c.path("ca.crt")),
            ("PGSSLCERT", c.path("client.crt")),
            ("PGSSLKEY", c.path("client.key")),
        ],
    );
    s.backup("app");
    // URL parameters win over the environment
    let mut s = strata(
        "tls-env-url-wins",
        url(
            "127.0.0.1",
            "postgres",
            "tls_src",
            &format!("sslmode=verify-full&sslrootcert={}", c.path("ca.crt")),
        ),
    );
    env(
        &mut s,
        &[
            ("PGSSLMODE", "disable".into()),
            ("PGSSLROOTCERT", c.path("other-ca.crt")),
        ],
    );
    s.backup("app");
}

#[test]
fn disable_against_a_tls_only_server_names_sslmode() {
    tls_pg();
    let s = strata(
        "tls-disable",
        url("127.0.0.1", "postgres", "tls_src", "sslmode=disable"),
    );
    refused(
        s.run(&["backup", "app"]),
        &["no pg_hba.conf entry", "no encryption"],
        "sslmode=verify-full",
    );
}

/// issue 16: with no sslmode at all strata failed with "no pg_hba.conf
/// entry … no encryption" where psql connected. The default (prefer) and
/// allow (plain refused, then TLS) reach a TLS-only server, as in libpq.
#[test]
fn default_prefer_and_allow_reach_a_tls_only_server() {
    tls_pg();
    strata("tls-default", url("127.0.0.1", "postgres", "tls_src", "")).backup("app");
    strata(
        "tls-prefer",
        url("127.0.0.1", "postgres", "tls_src", "sslmode=prefer"),
    )
    .backup("app");
    strata(
        "tls-allow",
        url("127.0.0.1", "postgres", "tls_src", "sslmode=allow"),
    )
    .backup("app");
}

#[test]
fn require_against_a_server_without_tls_says_so() {
    let plain = common::pg::shared_pg();
    plain.create_db("tls_plain");
    let s = strata(
        "tls-plain",
        format!(
            "postgres://postgres@127.0.0.1:{}/tls_plain?sslmode=require",
            plain.port
        ),
    );
    refused(s.run(&["backup", "app"]), &["offers no TLS"], "ssl = on");
    // prefer (the default) falls back to plain, as libpq does
    let s = strata(
        "tls-plain-prefer",
        format!(
            "postgres://postgres@127.0.0.1:{}/tls_plain?sslmode=prefer",
            plain.port
        ),
    );
    s.backup("app");
}

/// pg_basebackup and WAL archiving through a verify-full URL, and
/// `restore --start`: the restored copy keeps the source's TLS-only
/// pg_hba.conf and a certificate for the source's host name, and strata
/// reaches it on 127.0.0.1 anyway (sslmode=prefer there, whatever the
/// source's URL says).
#[test]
fn base_backup_and_restore_start_over_tls() {
    let c = certs();
    let repo = Repo::new("tls-base");
    let mut conf = tls_conf("server-dns");
    conf.extend(repo.archive_conf());
    let pg = PgCluster::start(PgOptions {
        name: "tls-base",
        extra_conf: conf,
        ..Default::default()
    });
    // the certificate names db.test only: verify-full holds for the source
    // (and pg_basebackup), never for the copy on 127.0.0.1
    repo.write_config(&format!(
        "postgres://postgres@db.test:{}/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
        pg.port,
        c.path("ca.crt")
    ));
    pg.psql(
        "postgres",
        "CREATE TABLE ev AS SELECT g AS id FROM generate_series(1, 100) g",
    );
    let out = repo.strata(&["--json", "backup", "main", "--kind", "base"]);
    assert!(
        out.status.success(),
        "base backup: {}\n{}",
        text(&out),
        pg.log_tail(30)
    );

    let dir = pg_scratch_dir("tls-base-restore").join("data");
    let stop_dir = dir.clone();
    at_exit(move || {
        let _ = pg_ctl_at(&stop_dir, &["stop", "-m", "immediate"]);
    });
    let port = free_port().to_string();
    let dir_s = dir.display().to_string();
    // with a time limit: a copy strata cannot reach is waited for long
    let cfg = repo.cfg.display().to_string();
    let out = run_strata(
        [
            "--config",
            &cfg,
            "--json",
            "restore",
            "main",
            "--target-dir",
            &dir_s,
            "--latest",
            "--archive-mode",
            "off",
            "--timeline",
            "current",
            "--start",
            "--port",
            &port,
        ],
        &[],
    );
    let log = fs::read_to_string(dir.join("strata-restore.log")).unwrap_or_default();
    assert!(out.code == Some(0), "restore --start: {out}\n{log}");
    let count = psql_at(port.parse().unwrap(), "postgres")
        .args(["-c", "SELECT count(*) FROM ev"])
        .output()
        .unwrap();
    let _ = pg_ctl_at(&dir, &["stop", "-m", "fast"]);
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        "100",
        "{}",
        text(&count)
    );
}

/// libpq uses no TLS over a Unix socket and reads none of its files:
/// PGSSLMODE=verify-full set for remote servers must not break a local
/// socket connection (strata's or pg_dump's).
#[test]
fn unix_socket_connections_use_no_tls() {
    let pg = tls_pg();
    let mut s = strata(
        "tls-socket",
        format!(
            "postgres:///tls_src?host={}&port={}&user=postgres",
            pg.socket_dir.display(),
            pg.port
        ),
    );
    s.env.extend([
        ("PGSSLMODE".to_string(), "verify-full".to_string()),
        (
            "PGSSLROOTCERT".to_string(),
            "/nonexistent/ca.pem".to_string(),
        ),
    ]);
    s.backup("app");
}
