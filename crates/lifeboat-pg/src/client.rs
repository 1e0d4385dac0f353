//! Running SQL through `psql`: no protocol implementation to maintain, and exactly the client
//! behaviour (libpq, `.pgpass`, TLS settings) operators already know.

use std::io::Write;
use std::process::Stdio;

use crate::conn::ConnInfo;
use crate::error::{PgError, Result, classify_client_error};
use crate::tools::Tools;

const FIELD: char = '\u{1f}';
const RECORD: char = '\u{1e}';
const NULL: &str = "\u{1}NULL\u{1}";

/// A checked connection to one database.
#[derive(Clone, Debug)]
pub struct Client {
    tools: Tools,
    conn: ConnInfo,
}

/// Rows of text values; `None` is SQL NULL.
pub type Rows = Vec<Vec<Option<String>>>;

impl Client {
    /// Connects (runs `SELECT 1`), so a wrong password or an unreachable server is reported
    /// here, classified ([`PgError::Connect`]).
    pub fn connect(tools: &Tools, conn: &ConnInfo) -> Result<Client> {
        let c = Client {
            tools: tools.clone(),
            conn: conn.clone(),
        };
        c.query("SELECT 1")?;
        Ok(c)
    }

    /// The connection settings.
    pub fn conn(&self) -> &ConnInfo {
        &self.conn
    }

    /// A client for another database on the same server (connects to check).
    pub fn for_database(&self, db: &str) -> Result<Client> {
        Client::connect(&self.tools, &self.conn.with_database(db))
    }

    /// Runs one statement and returns its rows.
    pub fn query(&self, sql: &str) -> Result<Rows> {
        let out = self.run(&["-c", sql], None)?;
        let text = out.strip_suffix('\n').unwrap_or(&out);
        if text.is_empty() {
            return Ok(Vec::new());
        }
        Ok(text
            .split(RECORD)
            .map(|r| {
                r.split(FIELD)
                    .map(|v| if v == NULL { None } else { Some(v.to_string()) })
                    .collect()
            })
            .collect())
    }

    /// The first column of the first row (None for no row or NULL).
    pub fn query_value(&self, sql: &str) -> Result<Option<String>> {
        Ok(self
            .query(sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    /// Runs a script (several statements), stopping at the first error.
    pub fn execute(&self, sql: &str) -> Result<()> {
        self.run(&["-f", "-"], Some(sql)).map(|_| ())
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = self.tools.command("psql")?;
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(format!("--field-separator={FIELD}"))
            .arg(format!("--record-separator={RECORD}"))
            .arg("-P")
            .arg(format!("null={NULL}"));
        self.conn.apply(&mut cmd);
        cmd.args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| PgError::Spawn {
            tool: "psql".into(),
            source: e,
        })?;
        if let Some(s) = stdin {
            let mut w = child.stdin.take().expect("piped");
            let data = s.to_string();
            std::thread::spawn(move || {
                let _ = w.write_all(data.as_bytes());
            });
        }
        let out = child.wait_with_output().map_err(|e| PgError::Spawn {
            tool: "psql".into(),
            source: e,
        })?;
        if !out.status.success() {
            return Err(classify_client_error(
                "psql",
                self.conn.url(),
                out.status.to_string(),
                &String::from_utf8_lossy(&out.stderr),
            ));
        }
        String::from_utf8(out.stdout).map_err(|_| PgError::Invalid("psql printed invalid UTF-8".into()))
    }
}
