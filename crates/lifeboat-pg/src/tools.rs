//! Finding the PostgreSQL programs, and running server programs as a non-root user.
//!
//! Client programs (`pg_basebackup`, `pg_dump`, `psql`, `pg_receivewal`) and server programs
//! (`initdb`, `pg_ctl`, `postgres`) come from one folder, so versions match. It is, in order:
//! `LIFEBOAT_PG_BIN`; `pg_config --bindir` (when that folder holds the server too); the newest
//! `/usr/lib/postgresql/<major>/bin` (Debian, Ubuntu).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{PgError, Result};

/// The folder of PostgreSQL programs.
#[derive(Clone, Debug)]
pub struct Tools {
    bindir: PathBuf,
}

impl Tools {
    /// Finds the programs (see the module docs).
    pub fn find() -> Result<Tools> {
        if let Some(d) = std::env::var_os("LIFEBOAT_PG_BIN") {
            let d = PathBuf::from(d);
            if d.join("pg_ctl").exists() || d.join("psql").exists() {
                return Ok(Tools { bindir: d });
            }
            return Err(PgError::ToolNotFound {
                tool: "pg_ctl".into(),
                looked: format!("LIFEBOAT_PG_BIN={}", d.display()),
            });
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
            && out.status.success()
        {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if d.join("pg_ctl").exists() {
                return Ok(Tools { bindir: d });
            }
        }
        if let Some(d) = newest_debian_bindir(Path::new("/usr/lib/postgresql")) {
            return Ok(Tools { bindir: d });
        }
        Err(PgError::ToolNotFound {
            tool: "pg_ctl".into(),
            looked: "LIFEBOAT_PG_BIN, pg_config --bindir, /usr/lib/postgresql/*/bin".into(),
        })
    }

    /// Uses a given folder.
    pub fn at(bindir: impl Into<PathBuf>) -> Tools {
        Tools { bindir: bindir.into() }
    }

    /// The folder.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Full path of a program, checked to exist.
    pub fn path(&self, tool: &str) -> Result<PathBuf> {
        let p = self.bindir.join(tool);
        if p.exists() {
            Ok(p)
        } else {
            Err(PgError::ToolNotFound {
                tool: tool.into(),
                looked: self.bindir.display().to_string(),
            })
        }
    }

    /// A command for a program, with a clean libpq environment (no inherited PGPASSWORD,
    /// PGHOST… that could silently point it elsewhere), without the repository passphrase (a
    /// server started this way would keep LIFEBOAT_PASSWORD in its environment, readable by any
    /// superuser through `COPY … FROM PROGRAM 'env'`), and with lifeboat's path variables made
    /// absolute: a server runs in its data directory, where a relative LIFEBOAT_CONFIG would
    /// name nothing, yet a replacement primary's `archive_command = 'lifeboat wal push %p'` may
    /// rely on them.
    pub fn command(&self, tool: &str) -> Result<Command> {
        let mut c = Command::new(self.path(tool)?);
        for v in [
            "PGPASSWORD",
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGSERVICE",
            "PGOPTIONS",
            "LIFEBOAT_PASSWORD",
            "LIFEBOAT_NEW_PASSWORD",
        ] {
            c.env_remove(v);
        }
        for v in [
            "LIFEBOAT_CONFIG",
            "LIFEBOAT_PASSWORD_FILE",
            "LIFEBOAT_REPO",
            "LIFEBOAT_CACHE_DIR",
            "LIFEBOAT_WAL_SPOOL",
        ] {
            if let Some(p) = std::env::var_os(v).map(std::path::PathBuf::from)
                && p.is_relative()
                && !p.to_string_lossy().contains("://")
                && let Ok(abs) = std::path::absolute(&p)
            {
                c.env(v, abs);
            }
        }
        Ok(c)
    }

    /// The major version of these programs (e.g. 15), from `pg_ctl --version`.
    pub fn major_version(&self) -> Result<u32> {
        let out = self
            .command("pg_ctl")?
            .arg("--version")
            .output()
            .map_err(|e| PgError::Spawn {
                tool: "pg_ctl".into(),
                source: e,
            })?;
        let s = String::from_utf8_lossy(&out.stdout);
        s.split_whitespace()
            .last()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| PgError::Invalid(format!("cannot read the version from pg_ctl --version: {s:?}")))
    }
}

fn newest_debian_bindir(root: &Path) -> Option<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let Some(major) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let bin = e.path().join("bin");
        if bin.join("pg_ctl").exists() && best.as_ref().is_none_or(|(m, _)| major > *m) {
            best = Some((major, bin));
        }
    }
    best.map(|(_, p)| p)
}

/// The OS user server programs run as. `initdb` and `postgres` refuse to run as root, so when
/// lifeboat runs as root they run as the `postgres` user (looked up in /etc/passwd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl RunAs {
    /// `None` when not root (programs run as the current user); the `postgres` user when root.
    pub fn for_server() -> Result<Option<RunAs>> {
        if rustix::process::geteuid().as_raw() != 0 {
            return Ok(None);
        }
        let user = std::env::var("LIFEBOAT_PG_OS_USER").unwrap_or_else(|_| "postgres".into());
        lookup_user(&user)?
            .map(Some)
            .ok_or_else(|| PgError::Invalid(format!(
                "running as root, and there is no {user:?} user in /etc/passwd to run PostgreSQL server programs as (set LIFEBOAT_PG_OS_USER)"
            )))
    }

    /// Makes `cmd` run as this user.
    pub fn apply(&self, cmd: &mut Command) {
        // std also drops root's supplementary groups when it switches the uid.
        cmd.uid(self.uid).gid(self.gid);
    }

    /// Hands a file or folder (not recursive) to this user.
    pub fn chown(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|e| PgError::io(path, e))
    }

    /// Hands a whole tree to this user (symlinks themselves, never their targets).
    pub fn chown_tree(&self, root: &Path) -> Result<()> {
        let m = std::fs::symlink_metadata(root).map_err(|e| PgError::io(root, e))?;
        std::os::unix::fs::lchown(root, Some(self.uid), Some(self.gid)).map_err(|e| PgError::io(root, e))?;
        if m.is_dir() {
            for e in std::fs::read_dir(root).map_err(|e| PgError::io(root, e))? {
                let e = e.map_err(|e| PgError::io(root, e))?;
                self.chown_tree(&e.path())?;
            }
        }
        Ok(())
    }
}

/// Looks a user up in /etc/passwd.
pub fn lookup_user(name: &str) -> Result<Option<RunAs>> {
    let text = std::fs::read_to_string("/etc/passwd").map_err(|e| PgError::io("/etc/passwd", e))?;
    Ok(parse_passwd(&text, name))
}

fn parse_passwd(text: &str, name: &str) -> Option<RunAs> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| {
            Some(RunAs {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup() {
        let t = "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104:PostgreSQL:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(parse_passwd(t, "postgres"), Some(RunAs { uid: 101, gid: 104 }));
        assert_eq!(parse_passwd(t, "nobody"), None);
    }

    #[test]
    fn finds_newest_debian_bindir() {
        let d = tempfile::tempdir().unwrap();
        for v in ["13", "15", "9"] {
            let b = d.path().join(v).join("bin");
            std::fs::create_dir_all(&b).unwrap();
            std::fs::write(b.join("pg_ctl"), "").unwrap();
        }
        assert_eq!(newest_debian_bindir(d.path()).unwrap(), d.path().join("15/bin"));
    }
}
