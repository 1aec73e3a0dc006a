//! The libpq password file (`PGPASSFILE`, else `~/.pgpass`):
//! `hostname:port:database:username:password`, `*` matching anything,
//! `\:` and `\\` escaped. tokio-postgres does not read it; libpq (pg_dump)
//! does, so strata reads it the same way for its own connections.

use std::path::PathBuf;

/// The password for a connection, if the password file has one.
pub fn lookup(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
    };
    let text = std::fs::read_to_string(path).ok()?;
    find(&text, host, port, db, user)
}

/// Looks up the first matching line of a password file's text.
pub fn find(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    // libpq treats a socket path host as "localhost" for matching.
    let host = if host.starts_with('/') || host.is_empty() {
        "localhost"
    } else {
        host
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_fields(line);
            if fields.len() < 5 {
                return None;
            }
            let want = [host, port.as_str(), db, user];
            let matches = fields[..4]
                .iter()
                .zip(want)
                .all(|(f, w)| f == "*" || f == w);
            matches.then(|| fields[4].clone())
        })
}

fn split_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().unwrap().push(n);
                }
            }
            // The password is the rest of the line, colons included.
            ':' if out.len() < 5 => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::find;

    const FILE: &str = "# comment\n\
        db1:5432:app:alice:pw1\n\
        *:5433:*:bob:pw\\:2\n\
        *:*:*:*:fallback:with:colons\n";

    #[test]
    fn exact_and_wildcards() {
        assert_eq!(
            find(FILE, "db1", 5432, "app", "alice").as_deref(),
            Some("pw1")
        );
        assert_eq!(find(FILE, "x", 5433, "any", "bob").as_deref(), Some("pw:2"));
        assert_eq!(
            find(FILE, "x", 1, "y", "z").as_deref(),
            Some("fallback:with:colons")
        );
        assert_eq!(
            find("db1:5432:app:alice:pw1\n", "db2", 5432, "app", "alice"),
            None
        );
    }

    #[test]
    fn socket_host_matches_localhost() {
        assert_eq!(
            find(
                "localhost:5432:a:u:p\n",
                "/var/run/postgresql",
                5432,
                "a",
                "u"
            )
            .as_deref(),
            Some("p")
        );
    }
}
