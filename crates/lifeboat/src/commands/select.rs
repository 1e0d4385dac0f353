//! Choosing the database snapshot to restore: `latest`, an id, or the newest clean one before an
//! incident (`--clean-before`). Written for both kinds of PostgreSQL snapshot: it reads only the
//! data model every database snapshot shares (`source_kind` `postgres-*`, the `forensic` flag
//! and tag, the `safety` tag, restore-test attestations), never mode-specific metadata.

use std::collections::HashMap;

use anyhow::Result;
use lifeboat_repo::attestation::{self, Attestation};
use lifeboat_repo::format::snapshot::Snapshot;
use lifeboat_repo::{Id, RepoError, Repository};

use crate::config::DbSource;
use crate::exit::{SNAPSHOT_NOT_FOUND, USAGE, fail};

/// Attestation kind written by `verify restore`.
pub const RESTORE_TEST: &str = "restore-test";
/// Tag of the backup `restore --force-overwrite` takes of the database it replaces.
pub const SAFETY_TAG: &str = "safety";

/// The newest restore-test attestation of every snapshot that has one.
pub fn verifications(repo: &Repository) -> Result<HashMap<Id, (Id, Attestation)>> {
    let (all, bad) = attestation::list_all(repo)?;
    for e in &bad {
        eprintln!("lifeboat: warning: skipped an unreadable attestation ({e}); run `lifeboat check`");
    }
    let mut m = HashMap::new();
    // Oldest first: later records replace earlier ones.
    for (id, a) in all.into_iter().filter(|(_, a)| a.kind == RESTORE_TEST) {
        m.insert(a.snapshot, (id, a));
    }
    Ok(m)
}

/// Forensic snapshots (`backup --force` of a damaged server) are evidence, never restored
/// automatically.
pub fn is_forensic(s: &Snapshot) -> bool {
    s.tags.iter().any(|t| t == "forensic")
        || s.source
            .as_ref()
            .and_then(|v| v.get("forensic"))
            .and_then(|f| f.as_bool())
            .unwrap_or(false)
}

/// Snapshots `latest` and `--clean-before` may choose: not forensic, not a safety backup of a
/// replaced database.
pub fn automatic(s: &Snapshot) -> bool {
    !is_forensic(s) && !s.tags.iter().any(|t| t == SAFETY_TAG)
}

/// True when `s` is a backup of the configured database source `src`: taken under its name
/// (when recorded) *and* from its URL (password left out). The name alone is not enough: two
/// hosts sharing one repository may each call their database `db`, and `latest` must never
/// pick the other host's database.
pub fn belongs_to(s: &Snapshot, src: &DbSource) -> bool {
    named_like(s, src) && same_url(s, src)
}

/// Recorded under `src`'s name (or recorded without a name, as older snapshots are).
fn named_like(s: &Snapshot, src: &DbSource) -> bool {
    s.source_kind.starts_with("postgres") && recorded_name(s).is_none_or(|n| n == src.name)
}

fn recorded_name(s: &Snapshot) -> Option<&str> {
    s.source
        .as_ref()
        .and_then(|v| v.get("source_name"))
        .and_then(|n| n.as_str())
}

/// Taken from `src`'s database: the same URL (as [`lifeboat_pg::conn::identity`] compares
/// them) and, for a URL that only means something on one machine (localhost, a socket), on
/// this host.
fn same_url(s: &Snapshot, src: &DbSource) -> bool {
    lifeboat_pg::conn::same_database(&src.url, &s.paths, &s.host)
}

/// When nothing of `src` was found: the URLs that backups under its name were taken from, so
/// the message can say why none of them counts (the config's URL changed, or another host
/// uses the same name).
pub fn other_urls(snaps: &[(Id, Snapshot)], src: &DbSource) -> Vec<String> {
    let mut urls: Vec<String> = snaps
        .iter()
        .filter(|(_, s)| recorded_name(s) == Some(src.name.as_str()) && !same_url(s, src))
        .flat_map(|(_, s)| s.paths.iter().cloned())
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// The not-found error for `what` of `src`, naming backups under its name taken elsewhere.
pub fn not_found(snaps: &[(Id, Snapshot)], src: &DbSource, what: String) -> anyhow::Error {
    let others = other_urls(snaps, src);
    if others.is_empty() {
        return RepoError::SnapshotNotFound(what).into();
    }
    let url = lifeboat_pg::ConnInfo::parse(&src.url).map_or_else(|_| src.url.clone(), |c| c.url().to_string());
    fail(
        SNAPSHOT_NOT_FOUND,
        format!(
            "snapshot {what} not found: backups named {:?} exist but were taken from {} (host {}), not from {url} on this host as configured; give the snapshot id to restore one of them on purpose",
            src.name,
            others.join(", "),
            hosts_of(snaps, &others)
        ),
    )
}

fn hosts_of(snaps: &[(Id, Snapshot)], urls: &[String]) -> String {
    let mut hosts: Vec<&str> = snaps
        .iter()
        .filter(|(_, s)| s.paths.iter().any(|p| urls.contains(p)))
        .map(|(_, s)| s.host.as_str())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts.join(", ")
}

/// Parses an incident time: RFC 3339 or PostgreSQL's style (`2026-11-20 14:00+00`).
pub fn parse_time(s: &str) -> Result<jiff::Timestamp> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let t = s.trim();
    let fixed = match t.rfind(['+', '-']) {
        Some(i) if i > 10 && t[i + 1..].len() == 2 => format!("{t}:00"),
        _ => t.to_string(),
    };
    let fixed = fixed.replace(' ', "T");
    // `14:00+00:00` lacks seconds: jiff wants them.
    let with_secs = match fixed.find('T') {
        Some(i)
            if fixed[i + 1..]
                .find(['+', '-', 'Z'])
                .is_some_and(|j| fixed[i + 1..i + 1 + j].len() == 5) =>
        {
            let j = i + 1 + fixed[i + 1..].find(['+', '-', 'Z']).expect("checked");
            format!("{}:00{}", &fixed[..j], &fixed[j..])
        }
        _ => fixed,
    };
    with_secs.parse::<jiff::Timestamp>().map_err(|_| {
        fail(
            USAGE,
            format!("invalid time {s:?}: expected a time with a UTC offset, e.g. '2026-11-20 14:00+00'"),
        )
    })
}

/// Candidates of a clean restore: snapshots consistent before `before` (for a physical backup,
/// its end: recovery cannot stop earlier) whose newest restore test passed, never forensic
/// ones; oldest first.
pub fn clean_candidates<'a>(
    snaps: &'a [(Id, Snapshot)],
    verified: &HashMap<Id, (Id, Attestation)>,
    before: Option<jiff::Timestamp>,
) -> Vec<&'a (Id, Snapshot)> {
    snaps
        .iter()
        .filter(|(_, s)| automatic(s))
        .filter(|(_, s)| before.is_none_or(|b| lifeboat_pg::restore::stop_time(s) < b))
        .filter(|(id, _)| verified.get(id).is_some_and(|(_, a)| a.passed))
        .collect()
}

/// The `source_kind` of the snapshots a source's mode takes.
pub fn kind_of(src: &DbSource) -> &'static str {
    match src.mode {
        crate::config::DbMode::Physical => lifeboat_pg::physical::SOURCE_KIND,
        crate::config::DbMode::Logical => lifeboat_pg::logical::SOURCE_KIND,
    }
}

/// Resolves the snapshot of `src` to restore or test: an id prefix, `latest` (newest automatic
/// one of the source's mode), or with `clean_before` the newest verified one before that time.
pub fn choose(
    repo: &Repository,
    src: &DbSource,
    reference: &str,
    clean_before: Option<&str>,
) -> Result<(Id, Snapshot)> {
    if reference != "latest" {
        let (id, s) = repo.find_snapshot(reference)?;
        if clean_before.is_some() {
            return Err(fail(USAGE, "give either a snapshot or --clean-before, not both"));
        }
        return Ok((id, s));
    }
    let all = repo.list_snapshots()?;
    let snaps: Vec<(Id, Snapshot)> = all
        .iter()
        .filter(|(_, s)| belongs_to(s, src) && s.source_kind == kind_of(src))
        .cloned()
        .collect();
    if let Some(t) = clean_before {
        let t = parse_time(t)?;
        let verified = verifications(repo)?;
        return clean_candidates(&snaps, &verified, Some(t))
            .last()
            .map(|(i, s)| (*i, s.clone()))
            .ok_or_else(|| {
                fail(
                    SNAPSHOT_NOT_FOUND,
                    format!(
                        "sources.{}: no snapshot before {t} has passed a restore test (run `lifeboat verify restore {}`; list candidates with `lifeboat snapshots --verified --before TIME`)",
                        src.name, src.name
                    ),
                )
            });
    }
    snaps
        .into_iter()
        .rfind(|(_, s)| automatic(s))
        .ok_or_else(|| not_found(&all, src, format!("latest of source {}", src.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_postgres_style() {
        let want: jiff::Timestamp = "2026-11-20T14:00:00Z".parse().unwrap();
        assert_eq!(parse_time("2026-11-20 14:00+00").unwrap(), want);
        assert_eq!(parse_time("2026-11-20 14:00:00+00").unwrap(), want);
        assert_eq!(parse_time("2026-11-20T16:00:00+02:00").unwrap(), want);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-11-20T14:03:00Z").is_ok());
        assert!(parse_time("2026-11-20 14:03:00.123456+00").is_ok());
        assert!(parse_time("2026-11-20 14:00").is_err());
    }
}
