//! One module per group of commands; this one resolves what they share (config, repository,
//! passphrase) from the global options.

mod backup;
mod check;
mod db;
mod health;
mod inspect;
mod keys;
mod maintenance;
mod pg_logical;
mod pg_physical;
mod pg_restore;
mod restore;
mod select;
mod wal;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use lifeboat_repo::backend::{self, Backend};
use lifeboat_repo::{RepoError, Repository};

use crate::cli::{Cli, Command, Global};
use crate::config::{self, Config};
use crate::exit::{NO_REPOSITORY, USAGE, fail};
use crate::secrets::{self, PassphraseSources};

/// What every command needs, resolved once.
pub struct Ctx {
    /// Global flags.
    pub global: Global,
    /// The config (empty when none was given).
    pub config: Config,
}

impl Ctx {
    fn location(&self) -> Result<String> {
        self.global
            .repo
            .clone()
            .or_else(|| self.config.location.clone())
            .ok_or_else(|| {
                fail(
                    NO_REPOSITORY,
                    "no repository given: use --repo, LIFEBOAT_REPO or `location` in the config",
                )
            })
    }

    pub(crate) fn sources(&self) -> PassphraseSources {
        PassphraseSources {
            file: self
                .global
                .password_file
                .clone()
                .or_else(|| self.config.password_file.clone()),
            command: std::env::var("LIFEBOAT_PASSWORD_COMMAND")
                .ok()
                .or_else(|| self.config.password_command.clone()),
        }
    }

    /// The storage backend of the repository (which must exist).
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        let loc = self.location()?;
        match backend::open(&loc) {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => Err(RepoError::NotFound { location: loc }.into()),
            Err(e) => Err(RepoError::from(e).into()),
        }
    }

    /// The storage backend for `init`, creating a missing local folder.
    pub fn backend_for_init(&self) -> Result<Arc<dyn Backend>> {
        Ok(backend::create(&self.location()?).map_err(RepoError::from)?)
    }

    /// Opens the repository with the passphrase.
    pub fn open(&self) -> Result<Repository> {
        let b = self.backend()?;
        if b.head("config").map_err(RepoError::from)?.is_none() {
            return Err(RepoError::NotFound {
                location: b.location().into(),
            }
            .into());
        }
        let pass = secrets::passphrase(&self.sources(), false)?;
        Ok(Repository::open(b, &pass)?)
    }

    /// The local cache folder, unless disabled.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.global.no_cache {
            return None;
        }
        self.global
            .cache_dir
            .clone()
            .or_else(|| self.config.cache_dir.clone())
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("lifeboat")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lifeboat")))
    }

    /// True when progress bars may be drawn.
    pub fn progress(&self) -> bool {
        !self.global.quiet && !self.global.json
    }
}

/// Opens the repository at `location` (which must exist) with the passphrase from `sources`;
/// for code that holds no [`Ctx`] (health checks run on other threads).
pub fn open_repository(location: &str, sources: &PassphraseSources) -> Result<Repository> {
    let b = match backend::open(location) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            return Err(RepoError::NotFound {
                location: location.into(),
            }
            .into());
        }
        Err(e) => return Err(RepoError::from(e).into()),
    };
    if b.head("config").map_err(RepoError::from)?.is_none() {
        return Err(RepoError::NotFound {
            location: b.location().into(),
        }
        .into());
    }
    let pass = secrets::passphrase(sources, false)?;
    Ok(Repository::open(b, &pass)?)
}

/// Parses a duration such as `30s`, `5m`, `24h`, `7d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    if let Ok(d) = s.parse::<jiff::SignedDuration>()
        && !d.is_negative()
    {
        return Ok(d.unsigned_abs());
    }
    if let Ok(k) = s.parse::<lifeboat_repo::retention::KeepDuration>()
        && k.years == 0
        && k.months == 0
    {
        let h = u64::from(k.hours) + 24 * (u64::from(k.days) + 7 * u64::from(k.weeks));
        return Ok(std::time::Duration::from_secs(h * 3600));
    }
    Err(fail(
        USAGE,
        format!("invalid duration {s:?} (examples: 30s, 5m, 24h, 7d)"),
    ))
}

/// Runs the parsed command; returns the exit code.
pub fn run(cli: Cli) -> Result<u8> {
    let config = match &cli.global.config {
        Some(p) => config::load(p)?,
        None => Config::default(),
    };
    let ctx = Ctx {
        global: cli.global,
        config,
    };
    match cli.command {
        Command::Init(a) => keys::init(&ctx, &a),
        Command::Backup(a) => backup::run(&ctx, &a),
        Command::Snapshots(a) => inspect::snapshots(&ctx, &a),
        Command::Ls(a) => inspect::ls(&ctx, &a),
        Command::Diff(a) => inspect::diff(&ctx, &a),
        Command::Restore(a) => restore::run(&ctx, &a),
        Command::Check(a) => check::run(&ctx, &a),
        Command::Forget(a) => maintenance::forget(&ctx, &a),
        Command::Prune(a) => maintenance::prune(&ctx, &a),
        Command::Key(k) => keys::key(&ctx, k),
        Command::Repair(r) => maintenance::repair(&ctx, r),
        Command::Health(a) => health::run(&ctx, &a),
        Command::Config(crate::cli::ConfigCommand::Validate) => health::validate(&ctx),
        Command::Wal(w) => wal::run(&ctx, w),
        Command::Verify(v) => pg_logical::verify(&ctx, v),
    }
}
