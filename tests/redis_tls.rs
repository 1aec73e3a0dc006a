//! Redis over TLS and as ACL users (issue 17 item 1), end to end against
//! real `redis-server`s with a `tls-port` and certificates from a test CA
//! made with the `openssl` CLI: a backup and a `restore --into` over
//! `rediss://` with `cacert=`, each as an ACL user with just the rights it
//! needs; refusals naming their cause (a certificate from a CA not
//! trusted, one for another host name, a missing or foreign client
//! certificate, a wrong password, a user lacking +sync or +replicaof),
//! each with exit code 5; `sni=` and client certificates accepted.

mod common;

use std::fs;

use common::cli::Strata;
use common::redis::{RedisServer, TestPki, Value, fill};

/// A local-repository setup with redis sources `(name, url)`.
fn setup(name: &str, sources: &[(&str, String)]) -> Strata {
    let s = Strata::local(name, &[]);
    let mut cfg = fs::read_to_string(&s.config).unwrap();
    for (n, url) in sources {
        cfg += &format!("\n[sources.{n}]\nkind = \"redis\"\nurl = \"{url}\"\n");
    }
    fs::write(&s.config, cfg).unwrap();
    s.init();
    s
}

fn tls_server(pki: &TestPki, name: &str, cert: &str, client_certs: bool) -> RedisServer {
    RedisServer::start_tls(
        name,
        &pki.path(&format!("{cert}.crt")),
        &pki.path(&format!("{cert}.key")),
        &pki.path("ca.crt"),
        client_certs,
        &[],
    )
}

#[test]
fn backup_and_restore_into_over_tls_as_acl_users() {
    let pki = TestPki::new();
    let ca = format!("?cacert={}", pki.path("ca.crt").display());
    let src = tls_server(&pki, "tls-src", "server", false);
    let mut c = src.conn();
    let counts = fill(&mut c);
    let before = c.dump_all();
    assert_eq!(before.len() as u64, counts.values().sum::<u64>());
    // A user with just what a snapshot needs, one without SYNC.
    c.ok(&[
        "ACL",
        "SETUSER",
        "backup",
        "on",
        ">b-pw",
        "-@all",
        "+info",
        "+replconf",
        "+sync",
    ]);
    c.ok(&[
        "ACL",
        "SETUSER",
        "nosync",
        "on",
        ">n-pw",
        "-@all",
        "+info",
        "+replconf",
    ]);
    let s = setup(
        "redis-tls",
        &[
            ("cache", src.tls_url("backup:b-pw@", &ca)),
            ("nosync", src.tls_url("nosync:n-pw@", &ca)),
            ("wrongpw", src.tls_url("backup:nope@", &ca)),
        ],
    );
    let b = s.backup("cache");
    let id = b["id"].as_str().unwrap().to_string();

    // issue 17 item 1: a user lacking +sync is refused naming SYNC and the rule.
    let o = s.run(&["backup", "nosync"]).expect_code(5);
    assert!(o.stderr.contains("user nosync may not run SYNC"), "{o}");
    assert!(o.stderr.contains("ACL SETUSER nosync +sync"), "{o}");
    // issue 17 item 1: a wrong password is named as such.
    let o = s.run(&["backup", "wrongpw"]).expect_code(5);
    assert!(o.stderr.contains("wrong password for user backup"), "{o}");
    assert!(o.stderr.contains("WRONGPASS"), "{o}");
    assert!(
        !o.all().contains("nope"),
        "the password is never printed\n{o}"
    );

    // restore --into a TLS target, as a user allowed INFO and REPLICAOF.
    let t = tls_server(&pki, "tls-target", "server", false);
    let mut tc = t.conn();
    tc.ok(&[
        "ACL",
        "SETUSER",
        "loader",
        "on",
        ">l-pw",
        "-@all",
        "+info",
        "+replicaof",
    ]);
    tc.ok(&["ACL", "SETUSER", "peek", "on", ">p-pw", "-@all", "+info"]);
    // issue 17 item 1: restore --into as a user lacking +replicaof.
    let o = s
        .run(&["restore", "cache", "--into", &t.tls_url("peek:p-pw@", &ca)])
        .expect_code(5);
    assert!(o.stderr.contains("user peek may not run REPLICAOF"), "{o}");
    assert!(o.stderr.contains("+replicaof"), "{o}");
    // refused before anything changed: nothing to detach, nothing to say
    assert!(!o.stderr.contains("detaching"), "{o}");
    let o = s
        .run(&[
            "--json",
            "restore",
            "cache",
            "--into",
            &t.tls_url("loader:l-pw@", &ca),
        ])
        .ok();
    let r = o.json();
    assert_eq!(r["backup"], id.as_str(), "{o}");
    assert_eq!(r["counts_match"], true, "{o}");
    assert!(
        !o.all().contains("l-pw"),
        "the password is never printed\n{o}"
    );
    assert_eq!(tc.dump_all(), before);

    // A target that replicates over TLS would open TLS to strata's plain
    // listener: refused, naming the setting, and detached again.
    let tr = RedisServer::start_tls(
        "tls-repl-target",
        &pki.path("server.crt"),
        &pki.path("server.key"),
        &pki.path("ca.crt"),
        false,
        &["--tls-replication", "yes"],
    );
    let o = s
        .run(&["restore", "cache", "--into", &tr.tls_url("", &ca)])
        .expect_code(5);
    assert!(o.stderr.contains("tls-replication"), "{o}");
    let mut rc = tr.conn();
    let Value::Str(repl) = rc.ok(&["INFO", "replication"]) else {
        panic!("INFO")
    };
    assert!(
        String::from_utf8_lossy(&repl).contains("role:master"),
        "detached"
    );
}

#[test]
fn certificate_checks_name_their_cause() {
    let pki = TestPki::new();
    let ca = pki.path("ca.crt").display().to_string();
    // Signed by a CA strata is not told to trust.
    let rogue = tls_server(&pki, "tls-rogue", "rogue-server", false);
    // Signed by the CA, but for db.internal only.
    let named = tls_server(&pki, "tls-named", "named-server", false);
    named.conn().ok(&["SET", "k", "v"]);
    let s = setup(
        "redis-tls-certs",
        &[
            ("rogue", rogue.tls_url("", &format!("?cacert={ca}"))),
            ("rogue_sys", rogue.tls_url("", "")),
            ("named", named.tls_url("", &format!("?cacert={ca}"))),
            (
                "named_sni",
                named.tls_url("", &format!("?cacert={ca}&sni=db.internal")),
            ),
            (
                "plain",
                format!("rediss://127.0.0.1:{}?cacert={ca}", named.port),
            ),
            (
                "no_tls",
                format!("redis://127.0.0.1:{}", named.tls_port.unwrap()),
            ),
        ],
    );
    // issue 17 item 1: an untrusted certificate is named, and the CA file.
    let o = s.run(&["backup", "rogue"]).expect_code(5);
    assert!(o.stderr.contains("certificate is not trusted"), "{o}");
    assert!(o.stderr.contains(&format!("cacert {ca}")), "{o}");
    assert!(o.stderr.contains("HINT"), "{o}");
    let o = s.run(&["backup", "rogue_sys"]).expect_code(5);
    assert!(o.stderr.contains("system's trusted roots"), "{o}");
    // issue 17 item 1: a certificate for another host name is named.
    let o = s.run(&["backup", "named"]).expect_code(5);
    assert!(
        o.stderr.contains("not valid for the host name 127.0.0.1"),
        "{o}"
    );
    assert!(o.stderr.contains("(it names db.internal)"), "{o}");
    assert!(o.stderr.contains("sni="), "{o}");
    // ... and with sni= naming the certificate's host, it is accepted.
    let b = s.backup("named_sni");
    assert_eq!(b["kind"], "snapshot", "{b}");
    // rediss:// to a plain port: Redis waits for the end of a line that
    // never comes; the handshake's deadline ends it.
    let o = s.run(&["backup", "plain"]).expect_code(5);
    assert!(o.stderr.contains("no TLS handshake within"), "{o}");
    assert!(o.stderr.contains("tls-port"), "{o}");
    // redis:// to a tls-port: the server hangs up; the hint says rediss://.
    let o = s.run(&["backup", "no_tls"]).expect_code(5);
    assert!(o.stderr.contains("rediss://"), "{o}");
}

#[test]
fn client_certificates() {
    let pki = TestPki::new();
    let ca = pki.path("ca.crt").display().to_string();
    let srv = tls_server(&pki, "tls-mutual", "server", true);
    srv.conn().ok(&["SET", "k", "v"]);
    let cert = |name: &str| {
        format!(
            "?cacert={ca}&cert={}&key={}",
            pki.path(&format!("{name}.crt")).display(),
            pki.path(&format!("{name}.key")).display()
        )
    };
    let s = setup(
        "redis-tls-mutual",
        &[
            ("none", srv.tls_url("", &format!("?cacert={ca}"))),
            ("client", srv.tls_url("", &cert("client"))),
            ("rogue", srv.tls_url("", &cert("rogue-client"))),
        ],
    );
    let b = s.backup("client");
    assert_eq!(b["kind"], "snapshot", "{b}");
    // issue 17 item 1: no client certificate, or one the server does not trust.
    let o = s.run(&["backup", "none"]).expect_code(5);
    assert!(o.stderr.contains("requires a client certificate"), "{o}");
    assert!(o.stderr.contains("cert="), "{o}");
    let o = s.run(&["backup", "rogue"]).expect_code(5);
    assert!(o.stderr.contains("refused the client certificate"), "{o}");
}
