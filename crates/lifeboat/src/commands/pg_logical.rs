//! Logical PostgreSQL: `backup` of a `mode = "logical"` source, `restore SOURCE … --to URL`,
//! and `verify restore SOURCE [SNAPSHOT]` (restore tests recorded as attestations).

use std::time::Instant;

use anyhow::Result;
use lifeboat_pg::logical::{self, BackupOptions, DatabaseState, LogicalSource, RestoreDumpOptions};
use lifeboat_pg::verify::{self, RestoreTestOptions, Scratch};
use lifeboat_pg::{Client, ConnInfo, Tools, db_properties, fingerprint};
use lifeboat_repo::Repository;
use lifeboat_repo::attestation::{self, Attestation};

use super::{Ctx, select};
use crate::cli::{BackupArgs, RestoreArgs, VerifyCommand, VerifyRestoreArgs};
use crate::config::{Databases, DbMode, DbSource};
use crate::exit::{DB_TARGET_EXISTS, OK, RESTORE_TEST_FAILED, USAGE, fail};
use crate::output;

/// Backs up `src` (logical); returns the exit code and the JSON result. With `--force`, a
/// forensic backup: what can be read, tagged `forensic`, never restored automatically.
pub fn backup(ctx: &Ctx, repo: &Repository, src: &DbSource, a: &BackupArgs) -> Result<(u8, serde_json::Value)> {
    let tools = Tools::find()?;
    let conn = ConnInfo::parse(&src.url)?;
    let mut tags = src.tags.clone();
    tags.extend(a.tags.iter().cloned());
    let opts = BackupOptions {
        databases: match &src.databases {
            Databases::All => None,
            Databases::List(l) => Some(l.clone()),
        },
        source_name: Some(src.name.clone()),
        tags,
        forensic: a.force,
        path: None,
        lock_timeout: Some(src.lock_timeout),
    };
    let out = logical::backup(repo, &tools, &conn, &opts)?;
    let r = &out.result;
    let failed: Vec<String> = out
        .source
        .databases
        .iter()
        .flat_map(|d| {
            d.failed_tables
                .iter()
                .map(move |(t, e)| format!("{}: table {t}: {e}", d.name))
                .chain(
                    d.dump_error
                        .iter()
                        .map(move |e| format!("{}: dump incomplete: {e}", d.name)),
                )
        })
        .collect();
    for f in &failed {
        eprintln!("lifeboat: warning: forensic backup: {f}");
    }
    if !ctx.global.json && !ctx.global.quiet {
        println!(
            "snapshot {} saved (sources.{}: logical{}, {})",
            r.snapshot_id.short(),
            src.name,
            if out.source.forensic { ", FORENSIC" } else { "" },
            conn.url()
        );
        for d in &out.source.databases {
            println!(
                "  database {:<20} {:>10}  {} tables, {} rows fingerprinted",
                d.name,
                output::bytes(d.bytes),
                d.tables.len(),
                d.tables.iter().map(|t| t.rows).sum::<u64>()
            );
        }
        println!(
            "  added    {} to the repository ({} before compression and encryption)",
            output::bytes(r.snapshot.summary.bytes_added),
            output::bytes(r.snapshot.summary.bytes_added_raw)
        );
        println!("  time     {}", output::secs(r.snapshot.summary.duration_secs));
    }
    let code = if failed.is_empty() { OK } else { crate::exit::PARTIAL };
    Ok((
        code,
        serde_json::json!({
            "snapshot_id": r.snapshot_id,
            "source": src.name,
            "mode": "logical",
            "time": r.snapshot.time,
            "tags": r.snapshot.tags,
            "summary": r.snapshot.summary,
            "postgres": out.source,
        }),
    ))
}

fn db_source<'c>(ctx: &'c Ctx, name: &str) -> Result<&'c DbSource> {
    ctx.config.db_sources.iter().find(|s| s.name == name).ok_or_else(|| {
        fail(
            USAGE,
            format!("no kind = \"postgres\" source named {name:?} in the config (--config)"),
        )
    })
}

/// The database named in a URL's path.
pub(super) fn database_of(url: &str) -> Result<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map(|i| &rest[i + 1..]).unwrap_or("");
    let db = path.split('?').next().unwrap_or("");
    if db.is_empty() {
        return Err(fail(
            USAGE,
            format!("--to {url}: name the database to restore into, e.g. postgres://host/app_restored"),
        ));
    }
    // %XX escapes, as libpq reads them (a database name may hold spaces or slashes).
    let b = db.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], db.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(x)) => {
                out.push(x);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| fail(USAGE, format!("--to {url}: the database name is not UTF-8")))
}

/// `restore SOURCE [SNAPSHOT] --to URL` / `--clean-before TIME`.
pub fn restore(ctx: &Ctx, a: &RestoreArgs) -> Result<u8> {
    let src = db_source(ctx, &a.items[0])?;
    if src.mode == DbMode::Physical {
        return Err(fail(
            USAGE,
            format!(
                "sources.{}: a physical source restores into a data directory: add --data-dir DIR (with --clean-before too)",
                src.name
            ),
        ));
    }
    let to =
        a.to.as_deref()
            .ok_or_else(|| fail(USAGE, "a logical database restore needs --to postgres://…/DATABASE"))?;
    let target = ConnInfo::parse(to)?;
    let db = database_of(target.url())?;
    let tools = Tools::find()?;
    let repo = ctx.open()?;
    let reference = a.items.get(1).map(String::as_str).unwrap_or("latest");
    let (id, snap) = select::choose(&repo, src, reference, a.clean_before.as_deref())?;
    let source = LogicalSource::of(&snap).ok_or_else(|| {
        fail(
            USAGE,
            format!("snapshot {} is not a logical PostgreSQL backup", id.short()),
        )
    })?;
    let dump = match &a.from_database {
        Some(n) => source.databases.iter().find(|d| d.name == *n),
        None if source.databases.len() == 1 => source.databases.first(),
        None => source.databases.iter().find(|d| d.name == db),
    }
    .ok_or_else(|| {
        let names: Vec<&str> = source.databases.iter().map(|d| d.name.as_str()).collect();
        fail(
            USAGE,
            format!(
                "snapshot {} holds databases {names:?}: choose one with --from-database",
                id.short()
            ),
        )
    })?;

    // The session that creates and drops the target cannot be connected to it.
    let admin_db = if db == "postgres" { "template1" } else { "postgres" };
    let admin = Client::connect(&tools, &target.with_database(admin_db))
        .or_else(|_| Client::connect(&tools, &target.with_database("template1")))?;
    let state = logical::database_state(&admin, &db)?;
    let mut safety = None;
    match state {
        DatabaseState::NotEmpty if !a.force_overwrite => {
            return Err(fail(
                DB_TARGET_EXISTS,
                format!(
                    "{}: database {db:?} exists and is not empty; nothing was changed (use --force-overwrite to replace it after a safety backup)",
                    target.url()
                ),
            ));
        }
        DatabaseState::NotEmpty => {
            if !a.no_safety_backup {
                let opts = BackupOptions {
                    databases: Some(vec![db.clone()]),
                    tags: vec![select::SAFETY_TAG.into()],
                    lock_timeout: Some(src.lock_timeout),
                    ..Default::default()
                };
                let b = logical::backup(&repo, &tools, &target.with_database(&db), &opts).map_err(|e| {
                    anyhow::anyhow!(e).context(format!("safety backup of {db:?} failed; nothing was changed"))
                })?;
                if !ctx.global.quiet && !ctx.global.json {
                    println!(
                        "safety backup of {db:?}: snapshot {} (tag safety)",
                        b.result.snapshot_id.short()
                    );
                }
                safety = Some(b.result.snapshot_id);
            }
        }
        DatabaseState::Empty | DatabaseState::Absent => {}
    }
    // Replacing a database: restored and checked under another name first, swapped in only
    // once it is complete (see logical::swap_database); until then the old one is untouched.
    let index = repo.load_index_for_reading()?;
    let staging = (state == DatabaseState::NotEmpty).then(|| logical::unique_name("lifeboat_restore"));
    let into = staging.clone().unwrap_or_else(|| db.clone());
    if state != DatabaseState::Empty
        && let Some(w) = db_properties::create(&admin, &into, dump.properties.as_ref())?
    {
        eprintln!("lifeboat: warning: {w}");
    }
    // A database this run created goes again on any early return (an error, a `?`).
    let mut created = Created {
        admin: &admin,
        name: (state != DatabaseState::Empty).then(|| into.clone()),
    };
    let left = |state: DatabaseState| match state {
        DatabaseState::NotEmpty => format!("{db:?} was not changed"),
        DatabaseState::Absent => format!("{db:?} was removed again"),
        DatabaseState::Empty => format!("{db:?} is empty"),
    };
    let started = Instant::now();
    let dconn = target.with_database(&into);
    let opts = RestoreDumpOptions { no_owner: a.no_owner };
    let bytes = match logical::restore_dump(&repo, &index, &snap.tree, dump, &tools, &dconn, &opts) {
        Ok(b) => b,
        Err(e) => {
            drop(created);
            if matches!(e, lifeboat_pg::PgError::Connect { .. }) || e.is_storage_full() {
                return Err(e.into());
            }
            return Err(fail(
                RESTORE_TEST_FAILED,
                format!(
                    "restore of snapshot {} into {} failed and was rolled back ({}{}): {e}",
                    id.short(),
                    target.with_database(&db).url(),
                    left(state),
                    safety
                        .map(|s| format!("; safety backup {}", s.short()))
                        .unwrap_or_default()
                ),
            ));
        }
    };
    let restore_secs = started.elapsed().as_secs_f64();
    let actual = fingerprint::compute(&tools, &dconn, None)?;
    let mismatches = fingerprint::compare(&dump.tables, &actual);
    // Settings and privileges go on a database this run created (not on one the user made empty for it),
    // before it is swapped in, so the replacement is complete when it appears; after the
    // fingerprints, which a setting such as a tiny statement_timeout could otherwise break.
    let properties = dump.properties.as_ref().filter(|_| state != DatabaseState::Empty);
    if let Some(p) = properties {
        let mut warnings = db_properties::apply_settings(&admin, &into, p)?;
        if !a.no_owner {
            warnings.extend(db_properties::apply_access(&admin, &into, p)?);
        }
        for w in warnings {
            eprintln!("lifeboat: warning: {w}");
        }
    }
    if let Some(staging) = &staging {
        if !mismatches.is_empty() {
            for m in &mismatches {
                eprintln!("lifeboat: fingerprint: {m}");
            }
            drop(created);
            return Err(fail(
                RESTORE_TEST_FAILED,
                format!(
                    "restored, but {} table fingerprint(s) differ from the backup: not swapped in, {}",
                    mismatches.len(),
                    left(state)
                ),
            ));
        }
        match logical::swap_database(&admin, staging, &db) {
            Ok(None) => {}
            Ok(Some(leftover)) => eprintln!("lifeboat: warning: {leftover}"),
            Err(f) => {
                if f.stranded {
                    // The original is not back under its name: the restored copy must stay.
                    created.name = None;
                }
                drop(created);
                return Err(anyhow::anyhow!(f.error).context(if f.stranded {
                    format!("restored into {staging:?}, but swapping it in for {db:?} failed half-way")
                } else {
                    format!("restored, but could not put it in place of {db:?}, which was not changed")
                }));
            }
        }
    }
    created.name = None;
    // The owner last, on the database in place: handing it over first could leave the
    // restoring role unable to rename or drop the staging copy.
    if let Some(p) = properties.filter(|_| !a.no_owner)
        && let Some(w) = db_properties::apply_owner(&admin, &db, p)?
    {
        eprintln!("lifeboat: warning: {w}");
    }
    let dconn = target.with_database(&db);
    let result = serde_json::json!({
        "snapshot_id": id,
        "database": dump.name,
        "target": dconn.url(),
        "bytes": bytes,
        "restore_secs": restore_secs,
        "tables": actual.len(),
        "fingerprint_mismatches": mismatches,
        "safety_backup": safety,
    });
    if ctx.global.json {
        output::json(&result);
    } else if !ctx.global.quiet {
        println!(
            "restored database {:?} of snapshot {} into {} ({} in {})",
            dump.name,
            id.short(),
            dconn.url(),
            output::bytes(bytes),
            output::secs(restore_secs)
        );
        if mismatches.is_empty() {
            println!("  fingerprints: all {} tables equal to the backup", actual.len());
        }
    }
    if !mismatches.is_empty() {
        for m in &mismatches {
            eprintln!("lifeboat: fingerprint: {m}");
        }
        return Err(fail(
            RESTORE_TEST_FAILED,
            format!(
                "restored, but {} table fingerprint(s) differ from the backup",
                mismatches.len()
            ),
        ));
    }
    Ok(OK)
}

/// `verify …`.
pub fn verify(ctx: &Ctx, v: VerifyCommand) -> Result<u8> {
    match v {
        VerifyCommand::Restore(a) => verify_restore(ctx, &a),
    }
}

fn verify_restore(ctx: &Ctx, a: &VerifyRestoreArgs) -> Result<u8> {
    let src = db_source(ctx, &a.source)?;
    let repo = ctx.open()?;
    let (id, snap) = select::choose(&repo, src, &a.snapshot, None)?;
    let report = if snap.source_kind == lifeboat_pg::physical::SOURCE_KIND {
        super::pg_physical::restore_test(ctx, &repo, src, &(id, snap))?
    } else if snap.source_kind == logical::SOURCE_KIND {
        logical_restore_test(&repo, src, id, &snap)?
    } else {
        return Err(fail(
            USAGE,
            format!(
                "snapshot {} is a {} snapshot, not a PostgreSQL backup",
                id.short(),
                snap.source_kind
            ),
        ));
    };
    record(ctx, &repo, src, report)
}

fn logical_restore_test(
    repo: &Repository,
    src: &DbSource,
    id: lifeboat_repo::Id,
    snap: &lifeboat_repo::format::snapshot::Snapshot,
) -> Result<verify::RestoreTestReport> {
    let tools = Tools::find()?;
    let opts = RestoreTestOptions {
        scratch: match &src.scratch_url {
            Some(u) => Scratch::Server(ConnInfo::parse(u)?),
            None => Scratch::Throwaway,
        },
        checks: src.checks.clone(),
        check_database: ConnInfo::parse(&src.url)
            .ok()
            .and_then(|c| database_of(c.url()).ok())
            .filter(|d| LogicalSource::of(snap).is_some_and(|s| s.databases.iter().any(|x| x.name == *d))),
    };
    Ok(verify::restore_test(repo, &tools, id, snap, &opts)?)
}

/// Records a restore test as an attestation, prints it, and fails (exit 18) when it did not pass.
fn record(ctx: &Ctx, repo: &Repository, src: &DbSource, report: verify::RestoreTestReport) -> Result<u8> {
    let id = report.snapshot;
    let detail = serde_json::to_value(&report)?;
    let att = Attestation::new(id, select::RESTORE_TEST, report.passed, detail);
    let att_id = attestation::write(repo, &att)?;
    if ctx.global.json {
        output::json(&serde_json::json!({ "attestation_id": att_id, "passed": report.passed, "report": report }));
    } else if !ctx.global.quiet {
        println!(
            "restore test of snapshot {} (sources.{}) in {}: {}",
            id.short(),
            src.name,
            report.scratch,
            if report.passed { "PASSED" } else { "FAILED" }
        );
        for d in &report.databases {
            println!(
                "  database {:<20} {} tables, {} rows: {}",
                d.name,
                d.tables,
                d.rows,
                if !d.mismatches.is_empty() {
                    format!("{} DIFFERENCES", d.mismatches.len())
                } else if report.reference.is_none() {
                    "fingerprinted (recorded as the reference for later restores)".to_string()
                } else {
                    format!(
                        "fingerprints equal to the {}",
                        report.reference.as_deref().unwrap_or("backup")
                    )
                }
            );
            for m in &d.mismatches {
                println!("    {m}");
            }
        }
        for c in &report.checks {
            println!(
                "  check {}: {} ({})",
                if c.passed { "ok  " } else { "FAIL" },
                c.sql,
                c.detail
            );
        }
        if let Some(am) = &report.amcheck {
            println!(
                "  pg_amcheck {}: {} in {}{}",
                am.options.join(" "),
                if am.passed { "no corruption found" } else { "FAILED" },
                output::secs(am.secs),
                if am.passed {
                    String::new()
                } else {
                    format!(" ({})", am.detail)
                }
            );
        }
        for w in &report.warnings {
            println!("  note: {w}");
        }
        if let Some(e) = &report.error {
            println!("  error: {e}");
        }
        if report.error.is_none() {
            println!(
                "  restore  {} in {} (RTO sample); fingerprints in {}",
                output::bytes(report.restore_bytes),
                output::secs(report.restore_secs),
                output::secs(report.fingerprint_secs)
            );
        }
        println!("  recorded as attestation {}", att_id.short());
    }
    if !report.passed {
        let why = report.error.clone().unwrap_or_else(|| {
            let diffs: usize = report.databases.iter().map(|d| d.mismatches.len()).sum();
            let failed = report.checks.iter().filter(|c| !c.passed).count();
            let amcheck = match &report.amcheck {
                Some(a) if !a.passed => ", pg_amcheck found problems",
                _ => "",
            };
            format!("{diffs} fingerprint difference(s), {failed} failed check(s){amcheck}")
        });
        return Err(fail(
            RESTORE_TEST_FAILED,
            format!("restore test of snapshot {} failed: {why}", id.short()),
        ));
    }
    Ok(OK)
}

/// A database a restore created: dropped again unless the restore got to keep it (`name` set
/// to `None`), so no early return leaves a staging copy of a production database behind.
struct Created<'a> {
    admin: &'a Client,
    name: Option<String>,
}

impl Drop for Created<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.name.take()
            && let Err(e) = logical::drop_database(self.admin, &n)
        {
            eprintln!("lifeboat: warning: could not drop the database {n:?} this restore created: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_from_urls() {
        assert_eq!(database_of("postgres://u@h:5432/app_restored").unwrap(), "app_restored");
        assert_eq!(database_of("postgres://h/my%20db?sslmode=require").unwrap(), "my db");
        assert!(database_of("postgres://h").is_err());
        assert!(database_of("postgres://h/?sslmode=require").is_err());
    }
}
