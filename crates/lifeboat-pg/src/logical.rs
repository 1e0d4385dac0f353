//! Logical backups and restores: `pg_dump` of each database, streamed into the repository
//! from an exported snapshot, with the fingerprint of every table taken from the same snapshot.
//!
//! Dump format: custom (`-Fc`) without compression (`-Z0`). Uncompressed, so the chunker finds
//! the unchanged parts of yesterday's dump and stores only what changed (the repository
//! compresses chunks itself); custom rather than plain SQL because `pg_restore` can then restore
//! into a server whose roles differ (`--no-owner`), one table at a time, or list the contents,
//! without a second dump. Written to a pipe, pg_dump emits no data offsets, so the stream is as
//! stable as plain text.
//!
//! PostgreSQL cannot import a snapshot in another database, so each database is consistent in
//! itself (dump and fingerprints from one snapshot); databases are dumped one after another.
//!
//! Snapshot layout: `globals.sql` (`pg_dumpall --globals-only`: roles, tablespaces) and
//! `databases/<name>.dump`; `Snapshot.source` holds [`LogicalSource`].

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::thread::JoinHandle;

use lifeboat_repo::format::tree::Node;
use lifeboat_repo::index::Index;
use lifeboat_repo::snapshot_writer::{EntryMeta, SnapshotWriter, WriteResult, WriterOptions};
use lifeboat_repo::{Id, Repository};

use crate::Client;
use crate::conn::ConnInfo;
use crate::db_properties::{self, DatabaseProperties};
use crate::error::{PgError, Result, classify_client_error};
use crate::fingerprint::{self, TableFingerprint};
use crate::psql::{self, ExportedSnapshot};
use crate::tools::Tools;

/// `source_kind` of logical snapshots.
pub const SOURCE_KIND: &str = "postgres-logical";
/// Tag of forensic snapshots (also `forensic: true` in the source metadata).
pub const FORENSIC_TAG: &str = "forensic";

/// What a logical snapshot holds (`Snapshot.source`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogicalSource {
    /// Always `logical`.
    pub mode: String,
    /// Name of the source in the config, when backed up from one.
    #[serde(default)]
    pub source_name: Option<String>,
    /// Server version (`server_version`).
    pub server_version: String,
    /// Dump format, `custom-z0`.
    pub format: String,
    /// `globals.sql` contains role passwords (false when the backup role may not read them).
    pub role_passwords: bool,
    /// The databases, in dump order.
    pub databases: Vec<DatabaseDump>,
    /// Taken with `--force` from a possibly damaged server: not consistent, never restored by
    /// `latest` or `--clean-before`.
    #[serde(default)]
    pub forensic: bool,
}

/// One database in a logical snapshot.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatabaseDump {
    /// Database name.
    pub name: String,
    /// Path of the dump inside the snapshot.
    pub file: String,
    /// Dump size in bytes.
    pub bytes: u64,
    /// Every table's fingerprint, from the dump's snapshot.
    pub tables: Vec<TableFingerprint>,
    /// Forensic backups: tables whose data could not be read (left out of the dump), with the
    /// error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tables: Vec<(String, String)>,
    /// Forensic backups: the dump itself failed (the stored dump is incomplete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_error: Option<String>,
    /// Encoding, locale, owner and settings of the database, which the dump leaves out
    /// ([`crate::db_properties`]); absent in snapshots taken before lifeboat recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<DatabaseProperties>,
}

impl LogicalSource {
    /// Reads the metadata of a snapshot (None: not a logical snapshot).
    pub fn of(snapshot: &lifeboat_repo::format::snapshot::Snapshot) -> Option<LogicalSource> {
        if snapshot.source_kind != SOURCE_KIND {
            return None;
        }
        serde_json::from_value(snapshot.source.clone()?).ok()
    }
}

/// A lock timeout said as what it is: another session held a table of `db` locked for longer
/// than the backup may wait (nothing is committed; the next scheduled run tries again).
fn explain_lock_timeout(e: PgError, db: &str, timeout: Option<std::time::Duration>) -> PgError {
    let text = e.to_string();
    let (Some(t), true) = (
        timeout,
        // pg_dump's --lock-wait-timeout is a statement timeout on its LOCK TABLE.
        text.contains("lock timeout")
            || text.contains("could not obtain lock")
            || (text.contains("statement timeout") && text.contains("LOCK TABLE")),
    ) else {
        return e;
    };
    PgError::Timeout {
        secs: t.as_secs(),
        what: format!(
            "a table lock in database {db:?}: another session holds a table locked (an ALTER TABLE, a LOCK …; see pg_locks), so no backup was taken (lock_timeout in the source's config) [{text}]"
        ),
    }
}

/// Options of [`backup`].
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Databases to dump; None: every database that accepts connections (templates excluded).
    pub databases: Option<Vec<String>>,
    /// Config source name, recorded in the metadata.
    pub source_name: Option<String>,
    /// Snapshot tags.
    pub tags: Vec<String>,
    /// Forensic mode (`backup --force`): take what can be read.
    pub forensic: bool,
    /// Recorded as the snapshot's path (default: the URL without password).
    pub path: Option<String>,
    /// How long pg_dump and the fingerprints wait for a table lock (None: forever).
    pub lock_timeout: Option<std::time::Duration>,
}

/// Outcome of [`backup`].
#[derive(Debug)]
pub struct BackupOutcome {
    /// The committed snapshot.
    pub result: WriteResult,
    /// Its metadata.
    pub source: LogicalSource,
}

/// Quotes a string literal for SQL, correct whatever `standard_conforming_strings` says: a
/// value with a backslash becomes an `E'…'` literal with the backslashes doubled (as
/// PostgreSQL's own `quote_literal` does), so no value can end the literal early.
pub(crate) fn quote_literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// Quotes an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The file name of a database's dump (names may hold any character but NUL).
fn dump_file(db: &str) -> String {
    let mut s = String::new();
    for (i, c) in db.chars().enumerate() {
        match c {
            '/' | '%' => s.push_str(&format!("%{:02X}", c as u32)),
            '.' if i == 0 => s.push_str("%2E"),
            c => s.push(c),
        }
    }
    format!("databases/{s}.dump")
}

/// Databases to back up.
fn resolve_databases(client: &Client, wanted: &Option<Vec<String>>) -> Result<Vec<String>> {
    let all: Vec<String> = client
        .query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    match wanted {
        None => Ok(all),
        Some(w) => {
            for d in w {
                if !all.contains(d) {
                    return Err(PgError::Invalid(format!(
                        "{}: database {d:?} does not exist (or does not accept connections)",
                        client.conn().url()
                    )));
                }
            }
            Ok(w.clone())
        }
    }
}

/// A child process whose standard output is read by the caller and whose error output is
/// collected in the background (so neither pipe can fill and block it).
struct Streaming {
    child: Child,
    stderr: Option<JoinHandle<String>>,
    tool: &'static str,
}

impl Streaming {
    fn spawn(mut cmd: std::process::Command, tool: &'static str, stdin: Stdio) -> Result<Streaming> {
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| PgError::Spawn {
                tool: tool.into(),
                source: e,
            })?;
        let mut err = child.stderr.take().expect("piped");
        let stderr = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }));
        Ok(Streaming { child, stderr, tool })
    }

    /// Waits; returns the error output on failure.
    fn finish(mut self, target: &str) -> Result<String> {
        let status = self.child.wait().map_err(|e| PgError::Spawn {
            tool: self.tool.into(),
            source: e,
        })?;
        let err = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            return Err(classify_client_error(self.tool, target, status.to_string(), &err));
        }
        Ok(err)
    }
}

/// Streams a program's standard output into the snapshot as `path`; fails (leaving the writer
/// to be dropped, so nothing is committed) when the program fails.
fn stream_into(
    w: &mut SnapshotWriter,
    path: &str,
    cmd: std::process::Command,
    tool: &'static str,
    target: &str,
) -> Result<(u64, Result<String>)> {
    let mut s = Streaming::spawn(cmd, tool, Stdio::null())?;
    let mut out = s.child.stdout.take().expect("piped");
    let added = w.add_file(path, &EntryMeta::file(0o600), &mut out);
    drop(out);
    let finished = s.finish(target);
    let n = added?;
    Ok((n, finished))
}

/// Takes a logical backup of the server `conn` points at (see the module docs). Without
/// `forensic`, any failure leaves the repository unchanged (nothing is committed).
pub fn backup(repo: &Repository, tools: &Tools, conn: &ConnInfo, opts: &BackupOptions) -> Result<BackupOutcome> {
    let client = Client::connect(tools, conn)?;
    let server_version = client.query_value("SHOW server_version")?.unwrap_or_default();
    let databases = resolve_databases(&client, &opts.databases)?;
    // Role passwords live in pg_authid, which only superusers read.
    let role_passwords = client.query("SELECT 1 FROM pg_authid LIMIT 1").is_ok();

    let mut tags = opts.tags.clone();
    if opts.forensic && !tags.iter().any(|t| t == FORENSIC_TAG) {
        tags.push(FORENSIC_TAG.into());
    }
    let mut wo = WriterOptions::new(
        SOURCE_KIND,
        vec![opts.path.clone().unwrap_or_else(|| conn.url().to_string())],
    );
    wo.tags = tags;
    let mut w = SnapshotWriter::new(repo, wo)?;

    let mut cmd = tools.command("pg_dumpall")?;
    cmd.arg("--globals-only");
    if !role_passwords {
        cmd.arg("--no-role-passwords");
    }
    conn.apply(&mut cmd);
    let (_, globals) = stream_into(&mut w, "globals.sql", cmd, "pg_dumpall", conn.url())?;
    if let Err(e) = globals
        && !opts.forensic
    {
        return Err(e);
    }

    let mut dumps = Vec::new();
    for db in &databases {
        let dconn = conn.with_database(db);
        let file = dump_file(db);
        let mut cmd = tools.command("pg_dump")?;
        cmd.args(["--format=custom", "--compress=0"]);
        if let Some(t) = opts.lock_timeout {
            cmd.arg(format!("--lock-wait-timeout={}", t.as_millis().max(1)));
        }
        let entry = if opts.forensic {
            let (tables, failed) = fingerprint::compute_forensic(tools, &dconn)?;
            for (t, _) in &failed {
                cmd.arg(format!("--exclude-table-data={t}"));
            }
            dconn.apply(&mut cmd);
            let (bytes, done) = stream_into(&mut w, &file, cmd, "pg_dump", dconn.url())?;
            DatabaseDump {
                name: db.clone(),
                file,
                bytes,
                tables,
                failed_tables: failed,
                dump_error: done.err().map(|e| e.to_string()),
                properties: db_properties::read(&client, db).ok().flatten(),
            }
        } else {
            let snap = ExportedSnapshot::export(tools, &dconn)?;
            cmd.arg(format!("--snapshot={}", snap.id()));
            dconn.apply(&mut cmd);
            // The fingerprints read the same snapshot while pg_dump streams it: both cores work.
            let (dumped, tables) = std::thread::scope(|s| {
                let fp = s.spawn(|| fingerprint::compute_in(tools, &dconn, Some(snap.id()), opts.lock_timeout));
                let dumped = stream_into(&mut w, &file, cmd, "pg_dump", dconn.url());
                let tables = fp
                    .join()
                    .unwrap_or_else(|_| Err(PgError::Invalid("fingerprint thread panicked".into())));
                (dumped, tables)
            });
            let locked = |e| explain_lock_timeout(e, db, opts.lock_timeout);
            let (bytes, done) = dumped.map_err(locked)?;
            done.map_err(locked)?;
            let tables = tables.map_err(locked)?;
            snap.release()?;
            DatabaseDump {
                name: db.clone(),
                file,
                bytes,
                tables,
                failed_tables: Vec::new(),
                dump_error: None,
                properties: db_properties::read(&client, db)?,
            }
        };
        dumps.push(entry);
    }
    let source = LogicalSource {
        mode: "logical".into(),
        source_name: opts.source_name.clone(),
        server_version,
        format: "custom-z0".into(),
        role_passwords,
        databases: dumps,
        forensic: opts.forensic,
    };
    let value = serde_json::to_value(&source).map_err(|e| PgError::Invalid(e.to_string()))?;
    let result = w.commit(Some(value))?;
    Ok(BackupOutcome { result, source })
}

/// Finds a file of a snapshot's tree.
pub fn find_file(repo: &Repository, index: &Index, root: &Id, path: &str) -> Result<Node> {
    let mut tree = repo.read_tree(index, root)?;
    let mut parts = path.split('/').peekable();
    while let Some(p) = parts.next() {
        let node = tree
            .find(std::ffi::OsStr::new(p))
            .cloned()
            .ok_or_else(|| PgError::Invalid(format!("snapshot has no {path}")))?;
        if parts.peek().is_none() {
            return Ok(node);
        }
        let sub = node
            .subtree
            .ok_or_else(|| PgError::Invalid(format!("snapshot: {p} is not a folder")))?;
        tree = repo.read_tree(index, &sub)?;
    }
    Err(PgError::Invalid(format!("snapshot has no {path}")))
}

/// Streams a stored file into a writer, one chunk at a time; returns the bytes written.
pub fn copy_file(repo: &Repository, index: &Index, node: &Node, out: &mut dyn Write) -> Result<u64> {
    let mut n = 0;
    for id in &node.content {
        let data = repo.read_blob(index, id)?;
        out.write_all(&data)
            .map_err(|e| PgError::io(String::from_utf8_lossy(&node.name_bytes()).into_owned(), e))?;
        n += data.len() as u64;
    }
    Ok(n)
}

/// Whether a database exists and holds anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseState {
    /// No such database.
    Absent,
    /// Exists, no tables, views, sequences or functions outside the system schemas.
    Empty,
    /// Exists and holds objects.
    NotEmpty,
}

/// Inspects database `db` on the server of `admin` (a client on another database).
pub fn database_state(admin: &Client, db: &str) -> Result<DatabaseState> {
    let exists = admin.query_value(&format!(
        "SELECT count(*) FROM pg_database WHERE datname = {}",
        quote_literal(db)
    ))?;
    if exists.as_deref() != Some("1") {
        return Ok(DatabaseState::Absent);
    }
    let c = admin.for_database(db)?;
    let n = c.query_value(
        "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%') \
         + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))",
    )?;
    Ok(if n.as_deref() == Some("0") {
        DatabaseState::Empty
    } else {
        DatabaseState::NotEmpty
    })
}

/// Creates an empty database from `template0` (the dump brings everything else).
pub fn create_database(admin: &Client, db: &str) -> Result<()> {
    db_properties::create(admin, db, None).map(|_| ())
}

/// Drops a database, disconnecting its sessions.
pub fn drop_database(admin: &Client, db: &str) -> Result<()> {
    admin.execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE);", quote_ident(db)))
}

/// How [`swap_database`] failed.
#[derive(Debug)]
pub struct SwapFailed {
    /// The step's error, with where things stand when `stranded`.
    pub error: PgError,
    /// The original database could not be put back under its name: the restored copy (still
    /// named `staging`) must be kept, and `error` says where the original is.
    pub stranded: bool,
}

/// Puts the database `staging` (a finished, verified restore) in the place of `db`, so that a
/// restore with `--force-overwrite` never leaves `db` empty or half-restored: `db` stops taking
/// connections, its sessions are ended, it is renamed aside, `staging` takes its name, and only
/// then is the old one dropped. A failed step undoes the ones before it (restoring `db`'s own
/// ALLOW_CONNECTIONS); should an undo fail too, the failure says where each database is.
/// `Ok(Some(text))`: swapped, but the old database could not be dropped (named in `text`).
pub fn swap_database(admin: &Client, staging: &str, db: &str) -> std::result::Result<Option<String>, SwapFailed> {
    let fail = |error: PgError, stranded: bool| SwapFailed { error, stranded };
    let old = unique_name("lifeboat_replaced");
    let (qdb, qold, qstaging) = (quote_ident(db), quote_ident(&old), quote_ident(staging));
    let allowed = admin
        .query_value(&format!(
            "SELECT datallowconn FROM pg_database WHERE datname = {}",
            quote_literal(db)
        ))
        .map_err(|e| fail(e, false))?
        .is_none_or(|v| v == "t");
    let reopen = format!("ALTER DATABASE {qdb} WITH ALLOW_CONNECTIONS {allowed};");
    admin
        .execute(&format!("ALTER DATABASE {qdb} WITH ALLOW_CONNECTIONS false;"))
        .map_err(|e| fail(e, false))?;
    let aside = admin
        .execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid();",
            quote_literal(db)
        ))
        .and_then(|()| admin.execute(&format!("ALTER DATABASE {qdb} RENAME TO {qold};")));
    if let Err(e) = aside {
        return Err(match admin.execute(&reopen) {
            Ok(()) => fail(e, false),
            Err(u) => fail(
                PgError::Invalid(format!(
                    "{e}; and {db:?} could not be opened to connections again ({u}): run ALTER DATABASE {qdb} WITH ALLOW_CONNECTIONS {allowed}"
                )),
                false,
            ),
        });
    }
    if let Err(e) = admin.execute(&format!("ALTER DATABASE {qstaging} RENAME TO {qdb};")) {
        let back = admin
            .execute(&format!("ALTER DATABASE {qold} RENAME TO {qdb};"))
            .and_then(|()| admin.execute(&reopen));
        return Err(match back {
            Ok(()) => fail(e, false),
            Err(u) => fail(
                PgError::Invalid(format!(
                    "{e}; putting the original back failed too ({u}): it is database {old:?} (not accepting connections), the restored copy is {staging:?}"
                )),
                true,
            ),
        });
    }
    Ok(drop_database(admin, &old).err().map(|e| {
        format!("{db:?} was replaced, but the old database, now {old:?}, could not be dropped ({e}): drop it by hand")
    }))
}

/// `prefix_` and 8 random hex digits: a database name no other restore (from any host, whose
/// process ids may collide with ours) will pick.
pub fn unique_name(prefix: &str) -> String {
    let mut r = [0u8; 4];
    lifeboat_repo::crypto::fill_random(&mut r);
    let hex: String = r.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}_{hex}")
}

/// Options of [`restore_dump`].
#[derive(Clone, Debug, Default)]
pub struct RestoreDumpOptions {
    /// `pg_restore --no-owner --no-privileges`: for a server without the original roles.
    pub no_owner: bool,
}

/// Restores one database's dump from the repository into the (existing, empty) database `conn`
/// points at, streaming it into `pg_restore` in one transaction that stops at the first error.
/// Returns the bytes streamed.
pub fn restore_dump(
    repo: &Repository,
    index: &Index,
    snapshot_tree: &Id,
    dump: &DatabaseDump,
    tools: &Tools,
    conn: &ConnInfo,
    opts: &RestoreDumpOptions,
) -> Result<u64> {
    let node = find_file(repo, index, snapshot_tree, &dump.file)?;
    let mut cmd = tools.command("pg_restore")?;
    cmd.args(["--exit-on-error", "--single-transaction"]);
    if opts.no_owner {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    conn.apply(&mut cmd);
    let mut s = Streaming::spawn(cmd, "pg_restore", Stdio::piped())?;
    let mut stdin = s.child.stdin.take().expect("piped");
    let mut stdout = s.child.stdout.take().expect("piped");
    let drain = std::thread::spawn(move || {
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    let copied = copy_file(repo, index, &node, &mut stdin);
    drop(stdin);
    let finished = s.finish(conn.url());
    let _ = drain.join();
    // pg_restore's own error explains a broken pipe better than the pipe does.
    finished.map_err(|e| match e {
        PgError::ToolFailed { message, status, .. } => PgError::ToolFailed {
            tool: "pg_restore".into(),
            status,
            message: format!("restore of database {:?} stopped: {message}", dump.name),
        },
        e => e,
    })?;
    copied
}

/// Loads `globals.sql` (roles, tablespaces) into a server. Roles that already exist make
/// statements fail; those errors are expected, so they are returned as warnings.
pub fn restore_globals(
    repo: &Repository,
    index: &Index,
    snapshot_tree: &Id,
    tools: &Tools,
    conn: &ConnInfo,
) -> Result<Vec<String>> {
    let node = find_file(repo, index, snapshot_tree, "globals.sql")?;
    let mut sql = Vec::new();
    copy_file(repo, index, &node, &mut sql)?;
    // Roles the server already has (its bootstrap superuser at least): pg_dumpall's CREATE ROLE
    // for them fails as expected, which is no news worth a note.
    let existing: Vec<String> = Client::connect(tools, conn)?
        .query("SELECT rolname FROM pg_roles")?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    let out = psql::script(tools, conn, &String::from_utf8_lossy(&sql), false)?;
    Ok(out
        .stderr
        .lines()
        .filter(|l| l.contains("ERROR"))
        .filter(|l| {
            !existing
                .iter()
                .any(|r| l.contains(&format!("role {} already exists", quote_ident(r))))
        })
        .map(|l| l.trim().to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_stay_inside_the_folder() {
        assert_eq!(dump_file("app"), "databases/app.dump");
        assert_eq!(dump_file("a/b"), "databases/a%2Fb.dump");
        assert_eq!(dump_file(".."), "databases/%2E..dump");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
