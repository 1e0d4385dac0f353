//! Errors of the PostgreSQL layer, grouped by what a caller (or an operator) can do about them;
//! the binary maps each group to a documented exit code.

use std::path::PathBuf;

/// Why talking to a server failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectFailure {
    /// No server answered (refused, unknown host, timeout, no socket).
    Unreachable,
    /// The server answered but refused the credentials (or the role/database does not exist).
    Authentication,
}

/// Everything that can go wrong in lifeboat-pg.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A PostgreSQL program is not installed where we looked.
    #[error(
        "PostgreSQL program {tool} not found (looked in {looked}); install the server binaries or set LIFEBOAT_PG_BIN"
    )]
    ToolNotFound {
        /// Program name.
        tool: String,
        /// Where we looked.
        looked: String,
    },
    /// A program could not be started.
    #[error("cannot run {tool}: {source}")]
    Spawn {
        /// Program name.
        tool: String,
        /// OS error.
        source: std::io::Error,
    },
    /// Connecting to the server failed.
    #[error("{target}: {kind}: {message}", kind = match .kind { ConnectFailure::Unreachable => "server unreachable", ConnectFailure::Authentication => "authentication failed" })]
    Connect {
        /// Server (URL without password).
        target: String,
        /// Unreachable or authentication.
        kind: ConnectFailure,
        /// The server's or client's message (one line).
        message: String,
    },
    /// The server is not set up for what was asked (wal_level, archive_mode, replication).
    #[error("{target}: server not configured for this: {message}")]
    NotConfigured {
        /// Server (URL without password).
        target: String,
        /// What is missing and how to fix it.
        message: String,
    },
    /// A replication slot is held by another client (`wal stream` does not take it over).
    #[error(
        "{target}: replication slot \"{slot}\" is in use by {holder}: stop that client (a leftover of an earlier wal stream?) or use another --slot"
    )]
    SlotInUse {
        /// Server (URL without password).
        target: String,
        /// The slot.
        slot: String,
        /// Who holds it (application, server PID, local PID when found).
        holder: String,
    },
    /// A program exited with an error.
    #[error("{tool} failed ({status}): {message}")]
    ToolFailed {
        /// Program name.
        tool: String,
        /// Exit status.
        status: String,
        /// Its error output (last lines, one line).
        message: String,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Waited too long.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        secs: u64,
    },
    /// A different WAL file is already stored under this name; nothing was overwritten.
    #[error("WAL file {0} is already in the repository with different content; nothing was overwritten")]
    WalConflict(String),
    /// WAL needed to reach a restore target, or to stay continuous, is not in the repository.
    #[error("WAL missing: {0}")]
    WalMissing(String),
    /// Bad input (URL, option, data from the server).
    #[error("{0}")]
    Invalid(String),
    /// The repository engine failed.
    #[error(transparent)]
    Repo(#[from] lifeboat_repo::RepoError),
}

impl PgError {
    /// Shorthand for an I/O error at a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> PgError {
        PgError::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the local disk (or quota) is full.
    pub fn is_storage_full(&self) -> bool {
        match self {
            PgError::Io { source, .. } => {
                matches!(
                    source.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) || source.raw_os_error() == Some(28)
            }
            PgError::Repo(r) => r.is_storage_full(),
            PgError::ToolFailed { message, .. } => message.contains("No space left on device"),
            _ => false,
        }
    }
}

/// Result alias.
pub type Result<T, E = PgError> = std::result::Result<T, E>;

/// Classifies a libpq client's error output: connection problems become [`PgError::Connect`].
pub fn classify_client_error(tool: &str, target: &str, status: String, stderr: &str) -> PgError {
    let msg = last_lines(stderr);
    let lower = msg.to_lowercase();
    let auth = [
        "password authentication failed",
        "no password supplied",
        "authentication failed",
        "role \"",
        "pg_hba.conf",
        "database \"",
    ];
    // Each of these says on its own that the server was not reached (psql's "could not
    // translate host name …" never says "connect"); a bare "no such file or directory" only
    // with "connect" (a missing socket, not a missing file of ours).
    let unreachable = [
        "could not connect",
        "connection refused",
        "could not translate host name",
        "timeout expired",
        "network is unreachable",
        "no route to host",
        "server closed the connection unexpectedly",
        "received invalid response to ssl negotiation",
        "ssl syscall error",
        "could not send ssl negotiation packet",
    ];
    if auth.iter().any(|a| lower.contains(a)) && (lower.contains("fatal") || lower.contains("failed")) {
        PgError::Connect {
            target: target.into(),
            kind: ConnectFailure::Authentication,
            message: msg,
        }
    } else if unreachable.iter().any(|a| lower.contains(a))
        || (lower.contains("no such file or directory") && lower.contains("connect"))
    {
        PgError::Connect {
            target: target.into(),
            kind: ConnectFailure::Unreachable,
            message: msg,
        }
    } else {
        PgError::ToolFailed {
            tool: tool.into(),
            status,
            message: msg,
        }
    }
}

/// Messages of a replication client that mean the connection went away and a later attempt
/// can get through: the server restarting, crashing or failing over, the network dropping, or
/// the slot still held for a moment by the walsender of the connection just lost.
const TRANSIENT: [&str; 16] = [
    // libpq's second line after "server closed the connection unexpectedly" (a crash), which
    // is all that is left of it in the last lines.
    "the server terminated abnormally",
    // The server ended the stream on a clean shutdown (pg_ctl stop/restart); we set no --endpos.
    "replication stream was terminated before stop point",
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "unexpected termination of replication stream",
    "could not receive data from wal stream",
    "connection to server was lost",
    "connection reset by peer",
    "connection timed out",
    "ssl syscall error",
    "is active for pid",
];

/// True when a replication client (pg_receivewal) ended for a reason that retrying can fix: the
/// server was unreachable, the connection was lost, or the server ended the stream on shutdown
/// (pg_receivewal --no-loop then says only "disconnected"). Authentication failures, missing
/// configuration and anything unrecognised are not: retrying would hide them.
pub fn is_transient(e: &PgError) -> bool {
    match e {
        PgError::Connect {
            kind: ConnectFailure::Unreachable,
            ..
        } => true,
        PgError::ToolFailed { message, .. } => {
            let lower = message.to_lowercase();
            TRANSIENT.iter().any(|t| lower.contains(t)) || only_disconnected(&lower)
        }
        _ => false,
    }
}

/// The client's whole complaint is "disconnected" (the server ended the stream cleanly).
fn only_disconnected(lower: &str) -> bool {
    lower
        .split(" / ")
        .all(|l| l.trim_end_matches('.').ends_with("disconnected"))
}

/// The last few non-empty lines of a program's error output, joined on one line.
pub fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    lines[start..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_libpq_messages() {
        let e = classify_client_error(
            "psql",
            "postgres://u@h/db",
            "exit status: 2".into(),
            "psql: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?\n",
        );
        assert!(
            matches!(
                e,
                PgError::Connect {
                    kind: ConnectFailure::Unreachable,
                    ..
                }
            ),
            "{e}"
        );
        let e = classify_client_error(
            "psql",
            "t",
            "exit status: 2".into(),
            "psql: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user \"x\"\n",
        );
        assert!(
            matches!(
                e,
                PgError::Connect {
                    kind: ConnectFailure::Authentication,
                    ..
                }
            ),
            "{e}"
        );
        for unreachable in [
            "psql: error: could not translate host name \"db.nosuchhost.invalid\" to address: Name or service not known\n",
            "psql: error: connection to server at \"127.0.0.1\", port 22 failed: received invalid response to SSL negotiation: S\n",
        ] {
            let e = classify_client_error("psql", "t", "exit status: 2".into(), unreachable);
            assert!(
                matches!(
                    e,
                    PgError::Connect {
                        kind: ConnectFailure::Unreachable,
                        ..
                    }
                ),
                "{e}"
            );
        }
        let e = classify_client_error(
            "psql",
            "t",
            "exit status: 1".into(),
            "ERROR:  syntax error at or near \"x\"\n",
        );
        assert!(matches!(e, PgError::ToolFailed { .. }), "{e}");
    }

    fn receivewal_end(stderr: &str) -> PgError {
        classify_client_error("pg_receivewal", "t", "exit status: 1".into(), stderr)
    }

    #[test]
    fn lost_connections_are_transient_and_refusals_are_not() {
        for transient in [
            "pg_receivewal: error: disconnected\n",
            "pg_receivewal: error: could not receive data from WAL stream: server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n\tbefore or while processing the request.\npg_receivewal: error: disconnected\n",
            "pg_receivewal: not renaming \"000000010000000000000004.partial\", segment is not complete\npg_receivewal: error: replication stream was terminated before stop point\npg_receivewal: error: disconnected\n",
            "pg_receivewal: error: unexpected termination of replication stream: FATAL:  terminating connection due to administrator command\npg_receivewal: error: disconnected\n",
            "pg_receivewal: error: connection to server at \"127.0.0.1\", port 5432 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?\npg_receivewal: error: disconnected\n",
            "pg_receivewal: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  the database system is shutting down\npg_receivewal: error: disconnected\n",
            "pg_receivewal: error: could not send replication command \"START_REPLICATION\": ERROR:  replication slot \"lifeboat\" is active for PID 4242\npg_receivewal: error: disconnected\n",
        ] {
            let e = receivewal_end(transient);
            assert!(is_transient(&e), "{e}");
        }
        for fatal in [
            "pg_receivewal: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user \"x\"\npg_receivewal: error: disconnected\n",
            "pg_receivewal: error: could not send replication command \"START_REPLICATION\": ERROR:  requested WAL segment 000000010000000000000003 has already been removed\npg_receivewal: error: disconnected\n",
            "pg_receivewal: error: could not send replication command \"START_REPLICATION\": ERROR:  replication slot \"x\" does not exist\npg_receivewal: error: disconnected\n",
        ] {
            let e = receivewal_end(fatal);
            assert!(!is_transient(&e), "{e}");
        }
        let e = PgError::NotConfigured {
            target: "t".into(),
            message: "wal_level is minimal".into(),
        };
        assert!(!is_transient(&e));
    }
}
