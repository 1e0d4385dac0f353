//! Connection settings: a `postgres://` URL whose password never reaches a command line.
//!
//! The password (from the URL, or `PGPASSWORD` in lifeboat's environment) is handed to libpq
//! programs through their environment only; arguments show the URL without it. `.pgpass` and
//! `PGPASSFILE` work as libpq documents.

use std::process::Command;

use crate::error::{PgError, Result};

/// What names a database in a (password-free) URL, for telling whether two URLs mean the same
/// one: the scheme spelling (`postgresql://`), the query (`?sslmode=…`), the default port and the
/// host's case are left out, so a config edited that way still finds its earlier backups.
/// `user@host:port/database`, the parts given.
pub fn identity(url: &str) -> String {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .unwrap_or(url);
    let rest = rest.split('?').next().unwrap_or(rest);
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.split(':').next().unwrap_or(u)), h),
        None => (None, authority),
    };
    let hostport = hostport.to_ascii_lowercase();
    let hostport = match hostport.rsplit_once(':') {
        Some((h, "5432")) if !h.ends_with(':') => h.to_string(),
        _ => hostport,
    };
    match user {
        Some(u) => format!("{u}@{hostport}/{db}"),
        None => format!("{hostport}/{db}"),
    }
}

/// True when a URL reaches the server through this machine only (localhost, a loopback
/// address, a Unix socket): it names a different server on every host, so only backups taken
/// on this host can be its backups.
pub fn is_local(url: &str) -> bool {
    let id = identity(url);
    let authority = id.split('/').next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host.is_empty()
        || host == "localhost"
        || host.starts_with("127.")
        || host == "::1"
        || host.starts_with('%')
        || url.contains("host=%2F")
        || url.contains("host=/")
}

/// True when a snapshot taken on `host` of `paths` (the URLs it records) is a backup of the
/// database `url` names: the same [`identity`], and for a [`is_local`] URL, taken on this host.
pub fn same_database(url: &str, paths: &[String], host: &str) -> bool {
    let want = identity(url);
    paths.iter().any(|p| identity(p) == want) && (!is_local(url) || host == lifeboat_repo::repository::hostname())
}

/// Where and how to connect.
#[derive(Clone)]
pub struct ConnInfo {
    /// URL without the password (safe to print and to pass as an argument).
    url: String,
    password: Option<String>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl ConnInfo {
    /// Parses `postgres://[user[:password]@][host][:port][/database][?params]`. Without a password
    /// in the URL, `PGPASSWORD` from the environment is used if set.
    pub fn parse(url: &str) -> Result<ConnInfo> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| PgError::Invalid("database url must start with postgres:// or postgresql://".into()))?;
        let scheme = &url[..url.len() - rest.len()];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(auth_end);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(ui) => match ui.split_once(':') {
                Some((u, p)) => (Some(u), Some(percent_decode(p)?)),
                None => (Some(ui), None),
            },
            None => (None, None),
        };
        let password = password.or_else(|| std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()));
        let clean = match user {
            Some(u) => format!("{scheme}{u}@{hostport}{tail}"),
            None => format!("{scheme}{hostport}{tail}"),
        };
        Ok(ConnInfo { url: clean, password })
    }

    /// The URL without password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// True when a password will be sent (from the URL or PGPASSWORD).
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The same server with another database.
    pub fn with_database(&self, db: &str) -> ConnInfo {
        let rest_start = self.url.find("://").map(|i| i + 3).unwrap_or(0);
        let rest = &self.url[rest_start..];
        let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
        let query = rest[path_start..]
            .find('?')
            .map(|q| &rest[path_start + q..])
            .unwrap_or("");
        ConnInfo {
            url: format!("{}{}/{}{}", &self.url[..rest_start], &rest[..path_start], db, query),
            password: self.password.clone(),
        }
    }

    /// Passes the connection to a libpq program: `--dbname=<url>` plus the password in the
    /// environment, and a connect timeout so an unreachable server fails in seconds.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.arg(format!("--dbname={}", self.url));
        self.apply_env(cmd);
    }

    /// Only the environment part of [`ConnInfo::apply`] (for programs taking the URL elsewhere).
    pub fn apply_env(&self, cmd: &mut Command) {
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            cmd.env("PGCONNECT_TIMEOUT", "10");
        }
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PgError::Invalid("database url: bad %-escape in the password".into()))?;
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PgError::Invalid("database url: password is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_ignores_spelling_and_is_local_sees_loopback() {
        let a = identity("postgres://backup@DB1.internal:5432/app");
        assert_eq!(a, identity("postgresql://backup@db1.internal/app?sslmode=require"));
        assert_ne!(a, identity("postgres://backup@db1.internal:5433/app"));
        assert_ne!(a, identity("postgres://backup@db1.internal/other"));
        assert!(is_local("postgres://backup@localhost/app"));
        assert!(is_local("postgres://backup@127.0.0.1:5433/app"));
        assert!(is_local("postgres://backup@[::1]:5432/app"));
        assert!(is_local("postgres:///app?host=/var/run/postgresql"));
        assert!(!is_local("postgres://backup@db1.internal/app"));
    }

    #[test]
    fn password_is_split_off() {
        let c = ConnInfo::parse("postgres://backup:s%40cret@db.internal:5432/app?sslmode=require").unwrap();
        assert_eq!(c.url(), "postgres://backup@db.internal:5432/app?sslmode=require");
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert!(!format!("{c:?}").contains("s@cret"));
        assert_eq!(
            c.with_database("other").url(),
            "postgres://backup@db.internal:5432/other?sslmode=require"
        );
        let c = ConnInfo::parse("postgresql://h").unwrap();
        assert_eq!(c.with_database("x").url(), "postgresql://h/x");
        assert!(ConnInfo::parse("mysql://h").is_err());
    }
}
