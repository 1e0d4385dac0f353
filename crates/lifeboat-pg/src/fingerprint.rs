//! Table fingerprints: a row count and an order-independent content hash of every table,
//! computed inside the database, so a restore can be proven equal to the backup without
//! shipping data anywhere.
//!
//! Each row's text form (`t::text`, which shows NULL and the empty string differently) is
//! hashed with `md5`; the first 60 bits of each hash are summed as `numeric` (no overflow, any
//! table size) so row order, page layout and vacuum history do not matter. Text forms depend on
//! session settings, so the session pins them (UTC, ISO dates, exact floats, hex bytea): the same
//! data gives the same fingerprint on any server of the same major version.

use std::collections::BTreeMap;

use crate::conn::ConnInfo;
use crate::error::{PgError, Result};
use crate::psql;
use crate::tools::Tools;

/// The fingerprint of one table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableFingerprint {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Row count.
    pub rows: u64,
    /// Sum of the rows' 60-bit md5 prefixes, in decimal.
    pub hash: String,
}

/// Fingerprints that could be computed, and the tables that failed (`schema.table`, error).
pub type ForensicFingerprints = (Vec<TableFingerprint>, Vec<(String, String)>);

/// Settings that make text forms (and so hashes) independent of server and client defaults.
pub const PINNED_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
SET statement_timeout = 0;\n";

/// The psql line that generates and runs one fingerprint query per ordinary table (`\gexec`),
/// reading the table list inside the same transaction as the data.
const GENERATE: &str = r#"SELECT format('SELECT %L, %L, count(*), coalesce(sum((''x'' || substr(md5(t::text), 1, 15))::bit(60)::bigint::numeric), 0) FROM %I.%I t', n.nspname, c.relname, n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%' ORDER BY n.nspname, c.relname \gexec"#;

/// Fingerprints every table of the database `conn` points at. With `snapshot`, inside a
/// REPEATABLE READ transaction importing that exported snapshot (the state `pg_dump
/// --snapshot` dumps).
pub fn compute(tools: &Tools, conn: &ConnInfo, snapshot: Option<&str>) -> Result<Vec<TableFingerprint>> {
    compute_in(tools, conn, snapshot, None)
}

/// [`compute`], failing with PostgreSQL's "canceling statement due to lock timeout" when a
/// table stays locked by another session for longer than `lock_timeout` (a backup's
/// fingerprints must not wait forever behind an ALTER TABLE).
pub fn compute_in(
    tools: &Tools,
    conn: &ConnInfo,
    snapshot: Option<&str>,
    lock_timeout: Option<std::time::Duration>,
) -> Result<Vec<TableFingerprint>> {
    let mut script = String::from("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n");
    if let Some(s) = snapshot {
        script.push_str(&format!("SET TRANSACTION SNAPSHOT '{}';\n", s.replace('\'', "''")));
    }
    script.push_str(PINNED_SETTINGS);
    if let Some(t) = lock_timeout {
        script.push_str(&format!("SET lock_timeout = {};\n", t.as_millis().max(1)));
    }
    script.push_str(GENERATE);
    script.push_str("\nCOMMIT;\n");
    let out = psql::script(tools, conn, &script, true)?;
    parse(&out.stdout)
}

/// Best-effort fingerprints for a damaged database (forensic backups): each table on its own,
/// outside any transaction, so one unreadable table does not stop the others. Returns the
/// fingerprints that worked and the tables that failed with their error.
pub fn compute_forensic(tools: &Tools, conn: &ConnInfo) -> Result<ForensicFingerprints> {
    let tables = psql::script(
        tools,
        conn,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ORDER BY n.nspname, c.relname;\n",
        true,
    )?;
    let mut script = String::from(PINNED_SETTINGS);
    script.push_str(GENERATE);
    script.push('\n');
    let out = psql::script(tools, conn, &script, false)?;
    let good = parse(&out.stdout)?;
    let errors: Vec<String> = out
        .stderr
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(|l| l.trim().to_string())
        .collect();
    let failed: Vec<String> = tables
        .stdout
        .split(['\n', psql::RECORD])
        .filter(|t| !t.is_empty())
        .filter(|t| !good.iter().any(|g| format!("{}.{}", g.schema, g.table) == *t))
        .map(str::to_string)
        .collect();
    // \gexec runs the queries in table order, so with one error per failed table they pair up;
    // otherwise every table gets all the errors rather than a wrong one.
    let failed = if errors.len() == failed.len() {
        failed.into_iter().zip(errors).collect()
    } else {
        let all = errors.join(" / ");
        failed.into_iter().map(|t| (t, all.clone())).collect()
    };
    Ok((good, failed))
}

fn parse(out: &str) -> Result<Vec<TableFingerprint>> {
    let mut v = Vec::new();
    for line in out.split(['\n', psql::RECORD]).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(psql::FIELD).collect();
        let [schema, table, rows, hash] = f.as_slice() else {
            return Err(PgError::Invalid(format!("unexpected fingerprint output: {line:?}")));
        };
        v.push(TableFingerprint {
            schema: schema.to_string(),
            table: table.to_string(),
            rows: rows
                .parse()
                .map_err(|_| PgError::Invalid(format!("unexpected row count {rows:?}")))?,
            hash: hash.to_string(),
        });
    }
    v.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
    Ok(v)
}

/// Differences between the fingerprints stored at backup time and those of a restored copy,
/// one human-readable line each (empty: identical).
pub fn compare(expected: &[TableFingerprint], actual: &[TableFingerprint]) -> Vec<String> {
    let key = |t: &TableFingerprint| format!("{}.{}", t.schema, t.table);
    let e: BTreeMap<String, &TableFingerprint> = expected.iter().map(|t| (key(t), t)).collect();
    let a: BTreeMap<String, &TableFingerprint> = actual.iter().map(|t| (key(t), t)).collect();
    let mut out = Vec::new();
    for (k, x) in &e {
        match a.get(k) {
            None => out.push(format!("table {k}: missing after restore")),
            Some(y) if x.rows != y.rows => {
                out.push(format!("table {k}: {} rows at backup, {} restored", x.rows, y.rows))
            }
            Some(y) if x.hash != y.hash => {
                out.push(format!("table {k}: same row count ({}) but different content", x.rows))
            }
            Some(_) => {}
        }
    }
    for k in a.keys().filter(|k| !e.contains_key(*k)) {
        out.push(format!("table {k}: present after restore but not in the backup"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, rows: u64, hash: &str) -> TableFingerprint {
        TableFingerprint {
            schema: "public".into(),
            table: name.into(),
            rows,
            hash: hash.into(),
        }
    }

    #[test]
    fn parse_and_compare() {
        let out = "public\u{1f}b\u{1f}2\u{1f}17\npublic\u{1f}a\u{1f}0\u{1f}0\n";
        let fp = parse(out).unwrap();
        assert_eq!(fp, vec![t("a", 0, "0"), t("b", 2, "17")]);
        assert!(compare(&fp, &fp).is_empty());
        let diff = compare(&fp, &[t("b", 2, "18"), t("c", 1, "1")]);
        assert_eq!(diff.len(), 3, "{diff:?}");
        assert!(diff[0].contains("public.a: missing"));
        assert!(diff[1].contains("different content"));
        assert!(diff[2].contains("public.c: present after restore"));
        assert!(parse("garbage").is_err());
    }
}
