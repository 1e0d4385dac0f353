//! `postgres`: connect, run the query, and where relevant look at WAL archiving
//! (`pg_stat_archiver`) and replication lag. The password comes from the URL, `PGPASSWORD` or
//! the pgpass file (`PGPASSFILE`, else `~/.pgpass`), as with libpq; it is never printed.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;
use tokio::time::Instant;

use tokio_postgres::NoTls;
use tokio_postgres::config::{Host, SslMode};

use super::{Outcome, Shared, chain};
use crate::spec::PostgresProbe;
use crate::units::format_duration;

/// Aborts the connection task when the probe ends or is dropped by a timeout.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => chain(e),
    }
}

/// One field of a pgpass line matches (`*` matches anything).
fn field_matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

/// Splits a pgpass line on unescaped colons, undoing `\:` and `\\`.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("non-empty").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields
}

/// The password for (host, port, db, user) from pgpass text.
fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(split_pgpass)
        .find(|f| {
            f.len() == 5
                && field_matches(&f[0], host)
                && field_matches(&f[1], &port)
                && field_matches(&f[2], db)
                && field_matches(&f[3], user)
        })
        .map(|f| f[4].clone())
}

fn pgpass_file() -> Option<PathBuf> {
    std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))
}

/// Fills in what libpq would: user from PGUSER/USER, password from PGPASSWORD or pgpass.
fn complete(mut cfg: tokio_postgres::Config) -> tokio_postgres::Config {
    if cfg.get_user().is_none()
        && let Some(u) = std::env::var("PGUSER").ok().or_else(|| std::env::var("USER").ok())
    {
        cfg.user(u);
    }
    if cfg.get_password().is_some() {
        return cfg;
    }
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        cfg.password(pw);
        return cfg;
    }
    let Some(file) = pgpass_file() else { return cfg };
    // libpq ignores a pgpass file others can read; so do we.
    let private = std::fs::metadata(&file).is_ok_and(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o077 == 0
    });
    let Some(text) = private.then(|| std::fs::read_to_string(&file).ok()).flatten() else {
        return cfg;
    };
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(_)) | None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let user = cfg.get_user().unwrap_or_default().to_string();
    let db = cfg.get_dbname().unwrap_or(&user).to_string();
    if let Some(pw) = pgpass_lookup(&text, &host, port, &db, &user) {
        cfg.password(pw);
    }
    cfg
}

/// The TLS client for the connection: verified against the CAs when `ca_file` is set, otherwise
/// encrypted but unauthenticated (libpq's `prefer` / `require`).
fn tls(p: &PostgresProbe, shared: &Shared) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match &p.ca_file {
        Some(f) => builder
            .with_root_certificates(super::tls::root_store(Some(f), shared)?)
            .with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(super::tls::Unverified(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

pub(crate) async fn probe(p: &PostgresProbe, shared: &Shared) -> Outcome {
    let mut cfg = complete(p.config.clone());
    if p.ca_file.is_some() && cfg.get_ssl_mode() == SslMode::Prefer {
        // A CA to verify against means TLS is expected: never fall back to plain text.
        cfg.ssl_mode(SslMode::Require);
    }
    let tls = match tls(p, shared) {
        Ok(t) => t,
        Err(e) => return Outcome::fail("down", e),
    };
    let t0 = Instant::now();
    let connected = if cfg.get_ssl_mode() == SslMode::Disable {
        cfg.connect(NoTls).await.map(|(c, conn)| {
            (
                c,
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            )
        })
    } else {
        cfg.connect(tls).await.map(|(c, conn)| {
            (
                c,
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            )
        })
    };
    let (client, conn) = match connected {
        Ok(x) => x,
        Err(e) => {
            return Outcome::fail("down", format!("database unavailable: {}", pg_error(&e))).with_latency(t0.elapsed());
        }
    };
    let _conn = AbortOnDrop(conn);
    if let Err(e) = client.simple_query(&p.query).await {
        return Outcome::fail("down", format!("query failed: {}", pg_error(&e))).with_latency(t0.elapsed());
    }
    let latency = t0.elapsed();
    if p.check_archiver {
        let sql = "SELECT failed_count, last_failed_time::text, last_archived_time::text, \
                   (last_failed_time IS NOT NULL AND (last_archived_time IS NULL OR last_failed_time > last_archived_time)) \
                   FROM pg_stat_archiver";
        match client.query_opt(sql, &[]).await {
            Ok(Some(row)) if row.get::<_, bool>(3) => {
                let failed: i64 = row.get(0);
                let last_failed: Option<String> = row.get(1);
                let last_ok: Option<String> = row.get(2);
                return Outcome::fail(
                    "archiver",
                    format!(
                        "WAL archiving is failing: {failed} failure(s), last at {}, last success {}",
                        last_failed.unwrap_or_default(),
                        last_ok.unwrap_or_else(|| "never".into())
                    ),
                )
                .with_latency(latency);
            }
            Ok(_) => {}
            Err(e) => {
                return Outcome::fail("archiver", format!("cannot read pg_stat_archiver: {}", pg_error(&e)))
                    .with_latency(latency);
            }
        }
    }
    let mut detail = format!("query ok ({})", p.query.chars().take(40).collect::<String>());
    if let Some(max) = p.max_replication_lag {
        // On a standby: time since the last replayed transaction (or since start, if none yet),
        // but only while received WAL waits to be replayed (an idle primary sends nothing, which
        // is no lag).
        let sql = "SELECT CASE WHEN pg_is_in_recovery() THEN \
                   CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0::float8 \
                   ELSE EXTRACT(EPOCH FROM now() - COALESCE(pg_last_xact_replay_timestamp(), pg_postmaster_start_time()))::float8 END \
                   ELSE (SELECT COALESCE(MAX(EXTRACT(EPOCH FROM replay_lag)), 0)::float8 FROM pg_stat_replication) END";
        match client.query_one(sql, &[]).await {
            Ok(row) => {
                let lag: Option<f64> = row.get(0);
                let lag = Duration::from_secs_f64(lag.unwrap_or(0.0).max(0.0));
                if lag > max {
                    return Outcome::fail(
                        "replication_lag",
                        format!(
                            "replication lag {} above {}",
                            format_duration(lag),
                            format_duration(max)
                        ),
                    )
                    .with_latency(latency);
                }
                detail.push_str(&format!(", replication lag {}", format_duration(lag)));
            }
            Err(e) => {
                return Outcome::fail(
                    "replication_lag",
                    format!("cannot read the replication lag: {}", pg_error(&e)),
                )
                .with_latency(latency);
            }
        }
    }
    Outcome::ok(detail).with_latency(latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_matching() {
        let text = "# comment\ndb.internal:5432:app:monitor:s3cr\\:et\n*:*:*:backup:other\n";
        assert_eq!(
            pgpass_lookup(text, "db.internal", 5432, "app", "monitor").as_deref(),
            Some("s3cr:et")
        );
        assert_eq!(pgpass_lookup(text, "x", 1, "y", "backup").as_deref(), Some("other"));
        assert_eq!(pgpass_lookup(text, "db.internal", 5433, "app", "monitor"), None);
    }
}
