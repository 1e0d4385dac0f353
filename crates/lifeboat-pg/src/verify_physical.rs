//! Restore tests of physical snapshots: the base backup restored into a throwaway data folder,
//! recovered with WAL from the repository (the same `restore_command` as a real restore) only
//! to the backup's consistent end, started on a free loopback port, then fingerprinted,
//! checked with the configured `checks` and with `pg_amcheck`.
//!
//! A physical backup carries no fingerprints of its own (the server's state at the backup's
//! end exists nowhere until WAL is replayed), so the first restore test computes them and the
//! attestation keeps them; later tests of the same snapshot, and later restores to the same
//! point, are compared with them.

use std::path::Path;
use std::time::{Duration, Instant};

use lifeboat_repo::format::snapshot::Snapshot;
use lifeboat_repo::restorer::RestoreProgress;
use lifeboat_repo::{Id, Repository};

use crate::cluster::{ClusterOptions, ScratchCluster};
use crate::error::{PgError, Result, last_lines};
use crate::fingerprint::{self, TableFingerprint};
use crate::restore::{self, PhysicalRestoreOptions, RecoveryTarget};
use crate::tools::Tools;
use crate::verify::{AmcheckResult, DatabaseResult, RestoreTestReport, run_checks};

/// Fingerprints of one database of an earlier restore (what a new one is compared with).
#[derive(Clone, Debug)]
pub struct ExpectedDatabase {
    /// Database name.
    pub name: String,
    /// Its tables.
    pub tables: Vec<TableFingerprint>,
}

/// Options of [`restore_test`].
#[derive(Clone, Debug)]
pub struct PhysicalTestOptions {
    /// SQL statements returning one boolean.
    pub checks: Vec<String>,
    /// Database the checks run in (default `postgres`).
    pub check_database: Option<String>,
    /// A role known to exist in the backup (the source URL's user), used to find the
    /// cluster's superuser when it is not called `postgres`.
    pub login_role: Option<String>,
    /// Fingerprints of an earlier restore test of the same snapshot, with a description of
    /// where they come from; None: this test records the reference.
    pub expected: Option<(String, Vec<ExpectedDatabase>)>,
    /// Run `pg_amcheck --heapallindexed` (every heap tuple looked up in its indexes; slower)
    /// rather than the structural checks only.
    pub heapallindexed: bool,
    /// How long restore + recovery + startup may take.
    pub timeout: Duration,
}

impl Default for PhysicalTestOptions {
    fn default() -> Self {
        PhysicalTestOptions {
            checks: Vec::new(),
            check_database: None,
            login_role: None,
            expected: None,
            heapallindexed: true,
            timeout: Duration::from_secs(3600),
        }
    }
}

/// Runs a restore test of a physical snapshot. `restore_command` is given the scratch folder
/// (owned by the server's OS user, removed afterwards; a place for the passphrase file and the
/// WAL spool) and returns the `restore_command` to write. A restore or recovery that fails is a
/// report with `error` (to be attested as failed); only an unusable setup (no server programs)
/// is an `Err`. The throwaway cluster is stopped and removed in every case.
pub fn restore_test(
    repo: &Repository,
    tools: &Tools,
    snapshot: &(Id, Snapshot),
    opts: &PhysicalTestOptions,
    restore_command: impl FnOnce(&Path, Option<crate::RunAs>) -> Result<String>,
) -> Result<RestoreTestReport> {
    if !restore::is_restorable_physical(&snapshot.1) {
        return Err(PgError::Invalid(format!(
            "snapshot {} is not a consistent physical PostgreSQL backup (forensic copies cannot be restore-tested)",
            snapshot.0.short()
        )));
    }
    tools.path("postgres")?;
    let started = Instant::now();
    let mut cluster = ScratchCluster::unformatted(tools, &ClusterOptions::default())?;
    let mut report = RestoreTestReport::pending(
        snapshot.0,
        "throwaway".into(),
        opts.expected.as_ref().map(|(from, _)| from.clone()),
    );
    let result = run(
        repo,
        tools,
        snapshot,
        opts,
        restore_command,
        &mut cluster,
        &mut report,
        started,
    );
    if let Err(e) = result {
        if matches!(e, PgError::ToolNotFound { .. }) {
            return Err(e);
        }
        report.error = Some(e.to_string());
    }
    drop(cluster);
    report.passed = report.error.is_none()
        && !report.databases.is_empty()
        && report.databases.iter().all(|d| d.mismatches.is_empty())
        && report.checks.iter().all(|c| c.passed)
        && report.amcheck.as_ref().is_none_or(|a| a.passed);
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn run(
    repo: &Repository,
    tools: &Tools,
    snapshot: &(Id, Snapshot),
    opts: &PhysicalTestOptions,
    restore_command: impl FnOnce(&Path, Option<crate::RunAs>) -> Result<String>,
    cluster: &mut ScratchCluster,
    report: &mut RestoreTestReport,
    started: Instant,
) -> Result<()> {
    let root = cluster.root().to_path_buf();
    let run_as = cluster.run_as();
    // The backup's own pg_hba.conf may require passwords lifeboat does not have: the copy
    // listens on loopback only and trusts local connections.
    let hba = root.join("pg_hba.conf");
    std::fs::write(&hba, "local all all trust\nhost all all 127.0.0.1/32 trust\n").map_err(|e| PgError::io(&hba, e))?;
    if let Some(r) = run_as {
        r.chown(&hba)?;
    }
    let command = restore_command(&root, run_as)?;
    let data = cluster.data_dir().to_path_buf();
    let ropts = PhysicalRestoreOptions {
        data_dir: data.clone(),
        force_overwrite: false,
        target: RecoveryTarget::Immediate,
        restore_command: command,
        run_as,
        no_archive: true,
        extra_settings: vec![
            format!("hba_file = {}", restore::conf_quote(&hba.display().to_string())),
            "ssl = 'off'".into(),
            "hot_standby = 'on'".into(),
        ],
        // Tablespaces go into the scratch folder too, never to their (live) locations.
        tablespace_map: crate::tablespaces::of_snapshot(&snapshot.1)
            .into_iter()
            .map(|t| (t.oid.clone(), root.join("tablespaces").join(&t.oid)))
            .collect(),
    };
    let files = restore::restore(repo, snapshot, &ropts, &RestoreProgress::default())?;
    report.restore_bytes = files.files.bytes_written;
    // Packaged servers (Debian) keep postgresql.conf outside the data directory: the backup
    // then has none, and the server refuses to start without one.
    let conf = data.join("postgresql.conf");
    if !conf.exists() {
        std::fs::write(&conf, "# written by lifeboat verify restore: the backup had none\n")
            .map_err(|e| PgError::io(&conf, e))?;
        if let Some(r) = run_as {
            r.chown(&conf)?;
        }
        report.warnings.push(
            "the backup holds no postgresql.conf (kept outside the data directory?): started with defaults".into(),
        );
    }
    if let Err(e) = cluster.start_with_timeout(opts.timeout) {
        return Err(recovery_error(&cluster.log()).unwrap_or(e));
    }
    // Whoever the superuser is (OID 10), connect as it.
    let mut roles: Vec<String> = opts.login_role.iter().cloned().collect();
    roles.push("postgres".into());
    let mut superuser = None;
    let mut last_err = None;
    for r in &roles {
        cluster.set_user(r);
        match cluster.client("postgres").or_else(|_| cluster.client("template1")) {
            Ok(c) => {
                superuser = c.query_value("SELECT rolname FROM pg_roles WHERE oid = 10")?;
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let superuser =
        superuser.ok_or_else(|| last_err.unwrap_or_else(|| PgError::Invalid("no role to log in as".into())))?;
    cluster.set_user(&superuser);
    let admin = cluster.client("template1")?;
    let left = opts.timeout.saturating_sub(started.elapsed());
    cluster.wait_for("recovery to the backup's end and promotion", left, || {
        admin
            .query_value("SELECT pg_is_in_recovery()")
            .ok()
            .flatten()
            .as_deref()
            == Some("f")
    })?;
    report.restore_secs = started.elapsed().as_secs_f64();

    let fp_started = Instant::now();
    let names: Vec<String> = admin
        .query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    for name in &names {
        let actual = fingerprint::compute(tools, &cluster.conn(name), None)?;
        let mismatches = match &opts.expected {
            Some((_, exp)) => match exp.iter().find(|e| e.name == *name) {
                Some(e) => fingerprint::compare(&e.tables, &actual),
                None => vec![format!(
                    "database {name}: present after restore but not in the reference"
                )],
            },
            None => Vec::new(),
        };
        report.databases.push(DatabaseResult {
            name: name.clone(),
            tables: actual.len(),
            rows: actual.iter().map(|t| t.rows).sum(),
            mismatches,
            fingerprints: actual,
        });
    }
    if let Some((_, exp)) = &opts.expected {
        for e in exp.iter().filter(|e| !names.contains(&e.name)) {
            report.databases.push(DatabaseResult {
                name: e.name.clone(),
                tables: 0,
                rows: 0,
                mismatches: vec![format!("database {}: missing after restore", e.name)],
                fingerprints: Vec::new(),
            });
        }
    }
    report.fingerprint_secs = fp_started.elapsed().as_secs_f64();

    let check_db = opts.check_database.clone().unwrap_or_else(|| "postgres".into());
    if !opts.checks.is_empty() {
        let client = cluster.client(&check_db)?;
        report.checks = run_checks(&client, &check_db, &opts.checks);
    }
    report.amcheck = amcheck(tools, cluster, opts.heapallindexed, &mut report.warnings)?;
    Ok(())
}

/// Why recovery stopped, from the server log's FATAL/PANIC lines (None: nothing telling).
fn recovery_error(log: &str) -> Option<PgError> {
    let fatal: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            ["FATAL:", "PANIC:"]
                .iter()
                .find_map(|k| l.find(k).map(|i| l[i + k.len()..].trim()))
        })
        .collect();
    if fatal.is_empty() {
        return None;
    }
    let mut text = fatal.join(" / ");
    // What restore_command (`lifeboat wal fetch`) said last: "not in the repository" and a
    // failure to read it need different fixes.
    let fetch: Vec<&str> = log
        .lines()
        .filter_map(|l| l.find("lifeboat:").map(|i| l[i..].trim()))
        .collect();
    if !fetch.is_empty() {
        let last = &fetch[fetch.len().saturating_sub(2)..];
        text = format!("{text} (restore_command: {})", last.join(" / "));
    }
    let gap = [
        "could not locate required checkpoint",
        "WAL ends before",
        "recovery ended before",
        "requested timeline",
        "could not find redo location",
    ]
    .iter()
    .any(|k| text.contains(k));
    Some(if gap {
        PgError::WalMissing(format!(
            "recovery to the backup's end failed, the repository lacks WAL the backup needs (run `lifeboat wal check`): {text}"
        ))
    } else {
        PgError::ToolFailed {
            tool: "postgres (recovery)".into(),
            status: "server stopped".into(),
            message: text,
        }
    })
}

/// `pg_amcheck` of every database: tables and B-tree indexes (the amcheck extension is
/// installed where missing: the copy is thrown away). None, with a warning, when the program
/// is not installed.
fn amcheck(
    tools: &Tools,
    cluster: &ScratchCluster,
    heapallindexed: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<AmcheckResult>> {
    let mut cmd = match tools.command("pg_amcheck") {
        Ok(c) => c,
        Err(PgError::ToolNotFound { looked, .. }) => {
            warnings.push(format!("pg_amcheck is not installed in {looked}: skipped"));
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut options = vec!["--all".to_string(), "--install-missing".into()];
    if heapallindexed {
        options.push("--heapallindexed".into());
    }
    let conn = cluster.conn("postgres");
    cmd.args(&options)
        .arg(format!("--maintenance-db={}", conn.url()))
        .stdin(std::process::Stdio::null());
    conn.apply_env(&mut cmd);
    let t0 = Instant::now();
    let out = cmd.output().map_err(|e| PgError::Spawn {
        tool: "pg_amcheck".into(),
        source: e,
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some(AmcheckResult {
        passed: out.status.success(),
        options,
        secs: t0.elapsed().as_secs_f64(),
        detail: last_lines(&text),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_errors_from_the_log() {
        let log = "2026-11-26 10:11:20.5 UTC [1] LOG:  starting\n\
                   2026-11-26 10:11:20.5 UTC [2] FATAL:  could not locate required checkpoint record\n\
                   2026-11-26 10:11:20.5 UTC [1] LOG:  startup process exited\n";
        let e = recovery_error(log).unwrap();
        assert!(matches!(e, PgError::WalMissing(_)), "{e}");
        assert!(
            e.to_string().ends_with(": could not locate required checkpoint record"),
            "{e}"
        );
        let with_fetch = format!("lifeboat: cannot read pack 1f2e: timed out\n{log}");
        let e = recovery_error(&with_fetch).unwrap();
        assert!(
            e.to_string()
                .ends_with("checkpoint record (restore_command: lifeboat: cannot read pack 1f2e: timed out)"),
            "{e}"
        );
        let e = recovery_error("x FATAL:  could not load library \"foo\"\n").unwrap();
        assert!(e.to_string().contains("could not load library"), "{e}");
        assert!(recovery_error("LOG: fine\n").is_none());
    }
}
