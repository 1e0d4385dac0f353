//! Restore tests: restore a logical snapshot into a throwaway server (or a configured scratch
//! server), recompute every table's fingerprint, compare with the one stored at backup time,
//! and run the configured checks. The report is what an attestation records.

use std::time::Instant;

use lifeboat_repo::{Id, Repository};

use crate::Client;
use crate::cluster::{ClusterOptions, ScratchCluster};
use crate::conn::ConnInfo;
use crate::db_properties;
use crate::error::{PgError, Result};
use crate::fingerprint;
use crate::logical::{self, LogicalSource, RestoreDumpOptions};
use crate::tools::Tools;

/// Where the restore test restores to.
#[derive(Clone, Debug)]
pub enum Scratch {
    /// A throwaway cluster: local server binaries, temporary folder, free loopback port.
    Throwaway,
    /// An existing server (admin connection); databases are created under temporary names and
    /// dropped afterwards.
    Server(ConnInfo),
}

/// Result of one check.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CheckResult {
    /// The SQL.
    pub sql: String,
    /// Database it ran in.
    pub database: String,
    /// True when it returned true.
    pub passed: bool,
    /// What it returned, or its error.
    pub detail: String,
}

/// Result for one database.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DatabaseResult {
    /// Database name.
    pub name: String,
    /// Tables compared.
    pub tables: usize,
    /// Rows in all tables (restored copy).
    pub rows: u64,
    /// Differences (empty: every fingerprint equal).
    pub mismatches: Vec<String>,
    /// The fingerprints of the restored copy, kept when there is no other record of them
    /// (physical backups: the restore test is where they are first computed, and later
    /// restores are compared with them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<crate::fingerprint::TableFingerprint>,
}

/// The outcome of a restore test (the `detail` of its attestation).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RestoreTestReport {
    /// Snapshot tested.
    pub snapshot: Id,
    /// Every fingerprint equal and every check true.
    pub passed: bool,
    /// Per database.
    pub databases: Vec<DatabaseResult>,
    /// Per check.
    pub checks: Vec<CheckResult>,
    /// Seconds from the start to restored databases that answer queries (an RTO sample).
    pub restore_secs: f64,
    /// Dump bytes streamed from the repository.
    pub restore_bytes: u64,
    /// Seconds spent recomputing fingerprints.
    pub fingerprint_secs: f64,
    /// Where it ran (`throwaway` or the scratch server's URL without password).
    pub scratch: String,
    /// Expected errors while loading globals (existing roles).
    pub warnings: Vec<String>,
    /// Why the test could not complete (restore failed), when it did not.
    pub error: Option<String>,
    /// What the fingerprints were compared with (`backup` for logical snapshots; for physical
    /// ones an earlier restore test's attestation, or none on the first test, which records
    /// them as the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `pg_amcheck` of every database (physical snapshots; None when not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amcheck: Option<AmcheckResult>,
}

impl RestoreTestReport {
    /// A report for a test that has not run yet: not passed, nothing measured. Both restore
    /// tests (logical and physical) start from it and fill it in as they go.
    pub fn pending(snapshot: Id, scratch: String, reference: Option<String>) -> Self {
        RestoreTestReport {
            snapshot,
            passed: false,
            databases: Vec::new(),
            checks: Vec::new(),
            restore_secs: 0.0,
            restore_bytes: 0,
            fingerprint_secs: 0.0,
            scratch,
            warnings: Vec::new(),
            error: None,
            reference,
            amcheck: None,
        }
    }
}

/// What `pg_amcheck` found in a restored physical copy.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AmcheckResult {
    /// Exit status 0: no corruption found in any table or B-tree index.
    pub passed: bool,
    /// The options it ran with.
    pub options: Vec<String>,
    /// Seconds it took.
    pub secs: f64,
    /// The last lines of its output (corruption reports or errors), empty when clean.
    pub detail: String,
}

/// Options of [`restore_test`].
#[derive(Clone, Debug)]
pub struct RestoreTestOptions {
    /// Where to restore.
    pub scratch: Scratch,
    /// SQL statements returning one boolean.
    pub checks: Vec<String>,
    /// Database the checks run in (default: the first one of the snapshot).
    pub check_database: Option<String>,
}

/// Runs a restore test of a logical snapshot. Failing checks and differing fingerprints are a
/// report with `passed: false`; a restore that cannot run at all is also reported (with
/// `error`), so it can be attested as failed. Only an unusable setup (no server binaries, no
/// scratch server) is an `Err`.
pub fn restore_test(
    repo: &Repository,
    tools: &Tools,
    snapshot_id: Id,
    snapshot: &lifeboat_repo::format::snapshot::Snapshot,
    opts: &RestoreTestOptions,
) -> Result<RestoreTestReport> {
    let source = LogicalSource::of(snapshot).ok_or_else(|| {
        PgError::Invalid(format!(
            "snapshot {} is not a logical PostgreSQL backup",
            snapshot_id.short()
        ))
    })?;
    let started = Instant::now();
    let mut cluster = None;
    let (admin, scratch_name, prefix) = match &opts.scratch {
        Scratch::Throwaway => {
            let mut c = ScratchCluster::create(tools, &ClusterOptions::default())?;
            c.start()?;
            // Not `postgres`: a snapshot of that database replaces the cluster's own.
            let conn = c.conn("template1");
            cluster = Some(c);
            (conn, "throwaway".to_string(), String::new())
        }
        Scratch::Server(conn) => (
            conn.clone(),
            conn.url().to_string(),
            format!("lifeboat_verify_{}_", snapshot_id.short()),
        ),
    };
    let admin_client = Client::connect(tools, &admin)?;
    let index = repo.load_index_for_reading()?;
    let mut report = RestoreTestReport::pending(snapshot_id, scratch_name, Some("backup".into()));
    let restored_name = |db: &str| {
        if prefix.is_empty() {
            db.to_string()
        } else {
            format!("{prefix}{db}")
        }
    };
    let run = (|| -> Result<()> {
        if cluster.is_some() {
            report.warnings = logical::restore_globals(repo, &index, &snapshot.tree, tools, &admin)?;
        }
        for d in &source.databases {
            let name = restored_name(&d.name);
            if logical::database_state(&admin_client, &name)? != logical::DatabaseState::Absent {
                if cluster.is_some() {
                    // A throwaway cluster has `postgres` already: start from an empty one.
                    logical::drop_database(&admin_client, &name)?;
                } else {
                    return Err(PgError::Invalid(format!(
                        "scratch server already has a database {name:?} (a restore test left behind?)"
                    )));
                }
            }
            if let Some(w) = db_properties::create(&admin_client, &name, d.properties.as_ref())? {
                report.warnings.push(w);
            }
            let dopts = RestoreDumpOptions {
                no_owner: cluster.is_none(),
            };
            report.restore_bytes += logical::restore_dump(
                repo,
                &index,
                &snapshot.tree,
                d,
                tools,
                &admin.with_database(&name),
                &dopts,
            )?;
        }
        report.restore_secs = started.elapsed().as_secs_f64();
        let fp_started = Instant::now();
        for d in &source.databases {
            let conn = admin.with_database(&restored_name(&d.name));
            let actual = fingerprint::compute(tools, &conn, None)?;
            report.databases.push(DatabaseResult {
                name: d.name.clone(),
                tables: actual.len(),
                rows: actual.iter().map(|t| t.rows).sum(),
                mismatches: fingerprint::compare(&d.tables, &actual),
                fingerprints: Vec::new(),
            });
        }
        report.fingerprint_secs = fp_started.elapsed().as_secs_f64();
        // Owner and settings once the fingerprints are taken (a setting such as a tiny
        // statement_timeout must not break them), before the checks: a `search_path` set on the
        // database decides what their unqualified names find, as it does for the application.
        for d in &source.databases {
            if let Some(p) = &d.properties {
                let name = restored_name(&d.name);
                report
                    .warnings
                    .extend(db_properties::apply_settings(&admin_client, &name, p)?);
                if cluster.is_some() {
                    report
                        .warnings
                        .extend(db_properties::apply_owner(&admin_client, &name, p)?);
                }
            }
        }
        let check_db = opts
            .check_database
            .clone()
            .or_else(|| source.databases.first().map(|d| d.name.clone()));
        if let Some(db) = check_db {
            let client = Client::connect(tools, &admin.with_database(&restored_name(&db)))?;
            report.checks = run_checks(&client, &db, &opts.checks);
        } else if !opts.checks.is_empty() {
            return Err(PgError::Invalid(
                "the snapshot holds no database to run checks in".into(),
            ));
        }
        Ok(())
    })();
    if let Err(e) = run {
        if matches!(e, PgError::Connect { .. } | PgError::ToolNotFound { .. }) {
            return Err(e);
        }
        report.error = Some(e.to_string());
    }
    if cluster.is_none() {
        for d in &source.databases {
            let _ = logical::drop_database(&admin_client, &restored_name(&d.name));
        }
    }
    drop(cluster);
    report.passed = report.error.is_none()
        && report.databases.len() == source.databases.len()
        && report.databases.iter().all(|d| d.mismatches.is_empty())
        && report.checks.iter().all(|c| c.passed);
    Ok(report)
}

/// Runs the configured checks (each SQL must return true) in one database.
pub(crate) fn run_checks(client: &Client, database: &str, checks: &[String]) -> Vec<CheckResult> {
    checks
        .iter()
        .map(|sql| {
            let (passed, detail) = match client.query(sql) {
                Ok(rows) => match rows.first().and_then(|r| r.first()).cloned().flatten() {
                    Some(v) if v == "t" => (true, "true".to_string()),
                    Some(v) => (false, format!("returned {v:?}, expected true")),
                    None => (false, "returned no value, expected true".to_string()),
                },
                Err(e) => (false, format!("error: {e}")),
            };
            CheckResult {
                sql: sql.clone(),
                database: database.to_string(),
                passed,
                detail,
            }
        })
        .collect()
}
