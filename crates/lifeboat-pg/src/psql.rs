//! `psql` scripts whose error output matters: fingerprints of damaged databases continue past
//! errors and report them, and an exported snapshot is held open by a `psql` session that waits
//! on its standard input.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Stdio};

use crate::conn::ConnInfo;
use crate::error::{PgError, Result, classify_client_error};
use crate::tools::Tools;

/// Field separator of script output.
pub const FIELD: char = '\u{1f}';
/// Record separator between rows of one result (results end with a newline).
pub const RECORD: char = '\u{1e}';

/// What a script printed.
#[derive(Debug)]
pub struct ScriptOutput {
    /// Rows, fields separated by [`FIELD`].
    pub stdout: String,
    /// Errors and notices.
    pub stderr: String,
}

fn command(tools: &Tools, conn: &ConnInfo, stop_on_error: bool) -> Result<std::process::Command> {
    let mut cmd = tools.command("psql")?;
    cmd.args(["-X", "-q", "-A", "-t", "-w"])
        .arg(format!("--field-separator={FIELD}"))
        .arg(format!("--record-separator={RECORD}"));
    if stop_on_error {
        cmd.args(["-v", "ON_ERROR_STOP=1"]);
    }
    conn.apply(&mut cmd);
    Ok(cmd)
}

/// Starts `psql` reading its script from standard input, all three streams piped.
pub(crate) fn spawn_reading_stdin(tools: &Tools, conn: &ConnInfo, stop_on_error: bool) -> Result<Child> {
    let mut cmd = command(tools, conn, stop_on_error)?;
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().map_err(|e| PgError::Spawn {
        tool: "psql".into(),
        source: e,
    })
}

/// Runs `script` (fed on standard input). With `stop_on_error`, the first error fails the whole
/// call (classified: unreachable, authentication, or the tool's message); without, errors are
/// only returned in `stderr` (a connection failure still fails).
pub fn script(tools: &Tools, conn: &ConnInfo, script: &str, stop_on_error: bool) -> Result<ScriptOutput> {
    let mut child = spawn_reading_stdin(tools, conn, stop_on_error)?;
    let mut w = child.stdin.take().expect("piped");
    let data = script.to_string();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(data.as_bytes());
    });
    let out = child.wait_with_output().map_err(|e| PgError::Spawn {
        tool: "psql".into(),
        source: e,
    })?;
    let _ = writer.join();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // psql exits 2 for a lost/failed connection, 3 for a script error under ON_ERROR_STOP.
    if !out.status.success() && (stop_on_error || out.status.code() == Some(2)) {
        return Err(classify_client_error(
            "psql",
            conn.url(),
            out.status.to_string(),
            &stderr,
        ));
    }
    Ok(ScriptOutput {
        stdout: String::from_utf8(out.stdout).map_err(|_| PgError::Invalid("psql printed invalid UTF-8".into()))?,
        stderr,
    })
}

/// A REPEATABLE READ transaction held open by a `psql` session, whose snapshot was exported
/// with `pg_export_snapshot()`: `pg_dump --snapshot` and the fingerprint queries import it, so
/// the dump and the fingerprints describe exactly the same state of the database, however busy
/// it is. The snapshot lives as long as this value; [`ExportedSnapshot::release`] commits.
pub struct ExportedSnapshot {
    child: Child,
    stdin: Option<ChildStdin>,
    id: String,
    target: String,
}

impl ExportedSnapshot {
    /// Opens the transaction and exports its snapshot.
    pub fn export(tools: &Tools, conn: &ConnInfo) -> Result<ExportedSnapshot> {
        let mut child = spawn_reading_stdin(tools, conn, true)?;
        let mut stdin = child.stdin.take().expect("piped");
        let sent =
            stdin.write_all(b"SET idle_in_transaction_session_timeout = 0;\nBEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();\n");
        let _ = stdin.flush();
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        let id = line.trim().to_string();
        if sent.is_err() || read.is_err() || id.is_empty() {
            drop(stdin);
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(classify_client_error("psql", conn.url(), status, &err));
        }
        Ok(ExportedSnapshot {
            child,
            stdin: Some(stdin),
            id,
            target: conn.url().to_string(),
        })
    }

    /// The snapshot id to pass to `pg_dump --snapshot` / `SET TRANSACTION SNAPSHOT`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Commits the (read-only) transaction and ends the session.
    pub fn release(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"COMMIT;\n");
        }
        let status = self.child.wait().map_err(|e| PgError::Spawn {
            tool: "psql".into(),
            source: e,
        })?;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(classify_client_error("psql", &self.target, status.to_string(), &err));
        }
        Ok(())
    }
}

impl Drop for ExportedSnapshot {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.finish();
        }
    }
}
