//! Attestations: sealed records that something was proven about a snapshot, e.g. that a restore
//! test restored it and found every table fingerprint equal.
//!
//! They live beside the snapshot, not inside it, because the proof comes later (a restore test
//! runs hours or months after the backup) and a snapshot manifest is never rewritten. Each one is
//! `attestations/<snapshot-id>/<id>` (sealed JSON, kind 6, named by its hash like every sealed
//! file), so all records of one snapshot are one listing away and forgetting a snapshot deletes
//! its folder. Writing one never touches data: a crash leaves either the record or nothing.

use std::collections::HashSet;

use crate::error::{RepoError, Result};
use crate::format::sealed::Kind;
use crate::id::Id;
use crate::repository::Repository;

const FOLDER: &str = "attestations";

/// Readable attestations (id, record) and the errors of unreadable ones.
pub type Listing = (Vec<(Id, Attestation)>, Vec<RepoError>);

/// One record about one snapshot.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attestation {
    /// Format version, 1.
    pub version: u32,
    /// The snapshot it is about.
    pub snapshot: Id,
    /// What was proven, e.g. `restore-test`.
    pub kind: String,
    /// When the proof finished.
    pub time: jiff::Timestamp,
    /// True when every part of the proof passed.
    pub passed: bool,
    /// Host that ran it.
    pub host: String,
    /// Kind-specific detail (per-check results, durations, bytes). Readers ignore what they do
    /// not know.
    #[serde(default)]
    pub detail: serde_json::Value,
}

impl Attestation {
    /// A new record made now on this host.
    pub fn new(snapshot: Id, kind: &str, passed: bool, detail: serde_json::Value) -> Attestation {
        Attestation {
            version: 1,
            snapshot,
            kind: kind.into(),
            time: jiff::Timestamp::now(),
            passed,
            host: crate::repository::hostname(),
            detail,
        }
    }
}

/// Stores an attestation; returns its id.
pub fn write(repo: &Repository, a: &Attestation) -> Result<Id> {
    let body = serde_json::to_vec(a).map_err(|e| RepoError::Invalid(format!("attestation: {e}")))?;
    repo.write_sealed(&format!("{FOLDER}/{}", a.snapshot), Kind::Verification, &body)
}

/// Every readable attestation, oldest first, plus the errors of unreadable ones (reported, never
/// fatal: a damaged record must not hide the others).
pub fn list_all(repo: &Repository) -> Result<Listing> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for o in repo.backend().list(&format!("{FOLDER}/"))? {
        let mut parts = o.key.trim_start_matches(&format!("{FOLDER}/")).split('/');
        let (Some(snap), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Some(snap), Some(id)) = (Id::from_hex(snap), Id::from_hex(name)) else {
            continue;
        };
        let parsed = repo.read_sealed(&o.key, Kind::Verification).and_then(|b| {
            serde_json::from_slice::<Attestation>(&b)
                .map_err(|e| RepoError::damaged(&o.key, format!("malformed attestation: {e}")))
        });
        match parsed {
            Ok(a) if a.snapshot == snap => out.push((id, a)),
            Ok(_) => bad.push(RepoError::damaged(&o.key, "attestation names another snapshot")),
            Err(RepoError::Backend(e)) if !e.is_not_found() => return Err(e.into()),
            Err(e) => bad.push(e),
        }
    }
    out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok((out, bad))
}

/// The attestations of one snapshot, oldest first.
pub fn list_for(repo: &Repository, snapshot: &Id) -> Result<Vec<(Id, Attestation)>> {
    Ok(list_all(repo)?
        .0
        .into_iter()
        .filter(|(_, a)| a.snapshot == *snapshot)
        .collect())
}

/// Deletes every attestation of a snapshot (called when the snapshot is forgotten).
pub fn delete_for(repo: &Repository, snapshot: &Id) -> Result<usize> {
    let mut n = 0;
    for o in repo.backend().list(&format!("{FOLDER}/{snapshot}/"))? {
        repo.backend().delete(&o.key)?;
        n += 1;
    }
    Ok(n)
}

/// Deletes attestations whose snapshot no longer exists (a forget interrupted between deleting
/// the manifest and its attestations, or a snapshot deleted by hand). Returns how many.
pub fn delete_orphans(repo: &Repository, existing: &HashSet<Id>) -> Result<usize> {
    let mut n = 0;
    for o in repo.backend().list(&format!("{FOLDER}/"))? {
        let snap = o
            .key
            .trim_start_matches(&format!("{FOLDER}/"))
            .split('/')
            .next()
            .and_then(Id::from_hex);
        if let Some(s) = snap
            && !existing.contains(&s)
        {
            repo.backend().delete(&o.key)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot_writer::{EntryMeta, SnapshotWriter, WriterOptions};

    #[test]
    fn written_listed_and_deleted_with_the_snapshot() {
        let opts = crate::InitOptions {
            kdf: crate::crypto::KdfParams::TESTING,
            ..Default::default()
        };
        let repo = Repository::init(crate::backend::open("memory:").unwrap(), b"pw", &opts).unwrap();
        let mut w = SnapshotWriter::new(&repo, WriterOptions::new("x", vec!["p".into()])).unwrap();
        w.add_file("f", &EntryMeta::file(0o600), &mut &b"abc"[..]).unwrap();
        let s = w.commit(None).unwrap().snapshot_id;
        let other = Id::random();
        write(
            &repo,
            &Attestation::new(s, "restore-test", false, serde_json::json!({"n": 1})),
        )
        .unwrap();
        write(
            &repo,
            &Attestation::new(s, "restore-test", true, serde_json::Value::Null),
        )
        .unwrap();
        write(
            &repo,
            &Attestation::new(other, "restore-test", true, serde_json::Value::Null),
        )
        .unwrap();
        let mine = list_for(&repo, &s).unwrap();
        assert_eq!(mine.len(), 2);
        assert_eq!(mine[0].1.detail["n"], 1);
        // The snapshot of `other` does not exist: it is an orphan.
        let existing: HashSet<Id> = [s].into();
        assert_eq!(delete_orphans(&repo, &existing).unwrap(), 1);
        assert_eq!(list_all(&repo).unwrap().0.len(), 2);
        assert_eq!(delete_for(&repo, &s).unwrap(), 2);
        assert!(list_all(&repo).unwrap().0.is_empty());
    }
}
