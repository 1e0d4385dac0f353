//! Tablespaces outside the data directory, in physical backups and their restores.
//!
//! The local physical method follows each `pg_tblspc/<oid>` link and stores the tablespace's
//! files as the directory `pg_tblspc/<oid>` of the snapshot (only this server's
//! `PG_<major>_<catalog>` folder, as `pg_basebackup` sends it), and records every tablespace's
//! oid, name and location in the snapshot. A restore puts each tablespace at its original
//! location or where `--tablespace-map NAME=DIR` says, and writes `tablespace_map` so that
//! PostgreSQL recreates the links when recovery starts. A location that already holds the
//! server's `PG_<major>_<catalog>` folder is refused (on the same host it is most likely the
//! live tablespace); with `--force-overwrite` that folder is moved aside only when the stopped
//! data directory being replaced links to it.

use std::path::{Path, PathBuf};

use lifeboat_repo::format::snapshot::Snapshot;

use crate::error::{PgError, Result};

/// One tablespace of a physical backup.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tablespace {
    /// Its oid: the name of its link in `pg_tblspc` and of its folder in the snapshot.
    pub oid: String,
    /// Its name (`spcname`), which `--tablespace-map` accepts too.
    pub name: String,
    /// Where it was when the backup was taken.
    pub location: String,
}

impl Tablespace {
    /// Its folder in the snapshot (an absolute snapshot path, as restore patterns use).
    pub fn snapshot_path(&self) -> String {
        format!("/pg_tblspc/{}", self.oid)
    }
}

/// The server's tablespaces outside the data directory, by oid (an in-place tablespace has a
/// relative location and lives inside it).
pub fn list(client: &crate::client::Client) -> Result<Vec<Tablespace>> {
    let rows = client.query(
        "SELECT oid::text, spcname, pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid",
    )?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let col = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            Tablespace {
                oid: col(0),
                name: col(1),
                location: col(2),
            }
        })
        .filter(|t| t.location.starts_with('/'))
        .collect())
}

/// The tablespaces a physical snapshot recorded (none for older snapshots and for the
/// `pg_basebackup` method, which refuses clusters with tablespaces).
pub fn of_snapshot(s: &Snapshot) -> Vec<Tablespace> {
    s.source
        .as_ref()
        .and_then(|src| src.get("tablespaces"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// Parses `NAME=DIR` or `OID=DIR` (one `--tablespace-map`).
pub fn parse_mapping(s: &str) -> std::result::Result<(String, PathBuf), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=DIR (the tablespace's name or oid, then its new folder)"))?;
    if k.is_empty() || v.is_empty() {
        return Err(format!("{s:?}: expected NAME=DIR"));
    }
    let dir = PathBuf::from(v);
    if !dir.is_absolute() {
        return Err(format!("{s:?}: the folder must be an absolute path"));
    }
    Ok((k.to_string(), dir))
}

/// Where each tablespace of `spaces` goes: the mapped folder, else its original location.
/// Refuses a mapping that names no tablespace of the snapshot, a relative location, and a
/// folder inside the data directory.
pub fn plan(spaces: &[Tablespace], map: &[(String, PathBuf)], data_dir: &Path) -> Result<Vec<(Tablespace, PathBuf)>> {
    for (k, _) in map {
        if !spaces.iter().any(|t| &t.name == k || &t.oid == k) {
            let known: Vec<String> = spaces.iter().map(|t| format!("{} (oid {})", t.name, t.oid)).collect();
            return Err(PgError::Invalid(format!(
                "--tablespace-map {k}=…: the backup has no tablespace {k} (it has: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    let mut out = Vec::new();
    for t in spaces {
        let dir = map
            .iter()
            .find(|(k, _)| k == &t.name || k == &t.oid)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| PathBuf::from(&t.location));
        if !dir.is_absolute() {
            return Err(PgError::Invalid(format!(
                "tablespace {} has the relative location {}: give it a folder with --tablespace-map {}=DIR",
                t.name,
                dir.display(),
                t.name
            )));
        }
        if dir.starts_with(data_dir) || data_dir.starts_with(&dir) {
            return Err(PgError::Invalid(format!(
                "tablespace {} would go to {}, inside (or around) the data directory {}: choose another folder with --tablespace-map {}=DIR",
                t.name,
                dir.display(),
                data_dir.display(),
                t.name
            )));
        }
        if dir.to_str().is_none_or(|s| s.contains(['\n', '\r'])) {
            return Err(PgError::Invalid(format!(
                "tablespace {}: the folder {} cannot be written to tablespace_map (not UTF-8, or a line break)",
                t.name,
                dir.display()
            )));
        }
        if let Some((_, d)) = out
            .iter()
            .find(|(_, d): &&(Tablespace, PathBuf)| d.starts_with(&dir) || dir.starts_with(d))
        {
            return Err(PgError::Invalid(format!(
                "two tablespaces would go to {} and {}, one inside the other: map them apart with --tablespace-map",
                d.display(),
                dir.display()
            )));
        }
        out.push((t.clone(), dir));
    }
    Ok(out)
}

/// The contents of `tablespace_map` for tablespaces at `placed` (PostgreSQL's format: oid,
/// a space, the path with backslashes before backslashes and line breaks).
pub fn map_file(placed: &[(Tablespace, PathBuf)]) -> String {
    let mut text = String::new();
    for (t, dir) in placed {
        let path = dir.display().to_string();
        let mut escaped = String::with_capacity(path.len());
        for c in path.chars() {
            if matches!(c, '\\' | '\n' | '\r') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        text.push_str(&format!("{} {escaped}\n", t.oid));
    }
    text
}

/// True when `dir` does not exist or is an empty folder (a restore may write there).
pub fn is_free(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(PgError::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(oid: &str, name: &str, loc: &str) -> Tablespace {
        Tablespace {
            oid: oid.into(),
            name: name.into(),
            location: loc.into(),
        }
    }

    #[test]
    fn mappings_by_name_or_oid_and_the_original_location_otherwise() {
        let spaces = [ts("16384", "fast", "/ssd/fast"), ts("16385", "big", "/hdd/big")];
        let map = vec![(String::from("16385"), PathBuf::from("/new/big"))];
        let p = plan(&spaces, &map, Path::new("/var/lib/pg/data")).unwrap();
        assert_eq!(p[0].1, PathBuf::from("/ssd/fast"));
        assert_eq!(p[1].1, PathBuf::from("/new/big"));
        assert_eq!(map_file(&p), "16384 /ssd/fast\n16385 /new/big\n");
        let e = plan(&spaces, &[("nope".into(), "/x".into())], Path::new("/d")).unwrap_err();
        assert!(
            e.to_string()
                .contains("no tablespace nope (it has: fast (oid 16384), big (oid 16385))"),
            "{e}"
        );
        let e = plan(&spaces, &[("fast".into(), "/d/ts".into())], Path::new("/d")).unwrap_err();
        assert!(e.to_string().contains("inside (or around) the data directory"), "{e}");
        let e = plan(&spaces, &[("fast".into(), "/hdd/big".into())], Path::new("/d")).unwrap_err();
        assert!(
            e.to_string()
                .contains("two tablespaces would go to /hdd/big and /hdd/big"),
            "{e}"
        );
        let e = plan(&spaces, &[("big".into(), "/ssd/fast/inner".into())], Path::new("/d")).unwrap_err();
        assert!(e.to_string().contains("one inside the other"), "{e}");
    }

    #[test]
    fn map_file_escapes_like_postgres() {
        let p = vec![(ts("1", "a", "/x"), PathBuf::from("/we\\ird dir"))];
        assert_eq!(map_file(&p), "1 /we\\\\ird dir\n");
    }

    #[test]
    fn parse_mapping_wants_name_and_absolute_folder() {
        assert_eq!(
            parse_mapping("fast=/mnt/f").unwrap(),
            ("fast".into(), PathBuf::from("/mnt/f"))
        );
        assert!(parse_mapping("fast").is_err());
        assert!(parse_mapping("fast=rel").unwrap_err().contains("absolute"));
        assert!(parse_mapping("=/x").is_err());
    }
}
