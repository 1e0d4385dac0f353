//! Snapshot manifests: the commit point of a backup (JSON, sealed, kind 3).

use crate::error::{RepoError, Result};
use crate::id::Id;

/// What a backup did; stored with the snapshot so reports never need to recompute it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Files seen for the first time.
    pub files_new: u64,
    /// Files whose metadata changed since the parent (re-read).
    pub files_changed: u64,
    /// Files skipped because size, mtime, ctime and inode matched the parent.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Files that could not be read (the snapshot is then partial).
    pub errors: u64,
    /// Total bytes of all files in the snapshot.
    pub bytes_total: u64,
    /// Bytes actually read from disk.
    pub bytes_read: u64,
    /// Bytes newly stored after deduplication, compression and encryption.
    pub bytes_added: u64,
    /// Plaintext bytes of newly stored blobs.
    pub bytes_added_raw: u64,
    /// New blobs stored.
    pub blobs_added: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
}

/// A snapshot manifest.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Format version, 1.
    pub version: u32,
    /// When the backup started.
    pub time: jiff::Timestamp,
    /// Host that made it.
    pub host: String,
    /// User that made it.
    pub user: String,
    /// Absolute source paths.
    pub paths: Vec<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Snapshot used to skip unchanged files.
    #[serde(default)]
    pub parent: Option<Id>,
    /// Root tree.
    pub tree: Id,
    /// `files` for file backups, `postgres-physical` / `postgres-logical` for databases
    /// (written by the snapshot writer); any other string for future sources.
    pub source_kind: String,
    /// Files whose content was unreadable (the snapshot is partial).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    /// What the backup did.
    pub summary: Summary,
    /// lifeboat version that wrote it.
    pub program_version: String,
    /// Source-specific metadata (PostgreSQL: LSNs, timeline, server version, fingerprints,
    /// `forensic`…). Free-form JSON so new sources add fields without a format change; readers
    /// ignore what they do not know. Absent for file backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<serde_json::Value>,
}

impl Snapshot {
    /// Serializes to the stored body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("snapshot serialization cannot fail")
    }

    /// Parses a stored body.
    pub fn decode(data: &[u8], name: &str) -> Result<Snapshot> {
        let s: Snapshot =
            serde_json::from_slice(data).map_err(|e| RepoError::damaged(name, format!("malformed snapshot: {e}")))?;
        if s.version != 1 {
            return Err(RepoError::UnsupportedVersion {
                name: name.into(),
                found: s.version,
                supported: 1,
            });
        }
        Ok(s)
    }
}
