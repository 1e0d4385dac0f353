//! One module per group of commands; this one resolves what they share (config, repository,
//! passphrase) from the global options.

mod backup;
mod check;
mod db;
mod health;
mod inspect;
mod keys;
mod locations;
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
use lifeboat_repo::backend::{self, Backend, FallbackReader, LocationOptions};
use lifeboat_repo::{RepoError, Repository};

use crate::cli::{Cli, Command, Global};
use crate::config::{self, Config};
use crate::exit::{FAILURE, NO_REPOSITORY, STORE_AUTH, USAGE, fail};
use crate::secrets::{self, PassphraseSources};

/// What every command needs, resolved once.
pub struct Ctx {
    /// Global flags.
    pub global: Global,
    /// The config (empty when none was given).
    pub config: Config,
}

/// One configured location, opened (opening contacts nothing; the first request does).
pub struct Loc {
    /// Its settings.
    pub opts: LocationOptions,
    /// The backend, or why it could not be set up.
    pub backend: std::result::Result<Arc<dyn Backend>, String>,
}

impl Loc {
    /// The name shown to people: the config name, or the URL for a bare location.
    pub fn name(&self) -> &str {
        if self.opts.name.is_empty() {
            &self.opts.url
        } else {
            &self.opts.name
        }
    }

    /// `Ok(true)` when the location answers and holds a repository, `Ok(false)` when it
    /// answers without one, `Err` when it cannot be reached.
    pub fn probe(&self) -> std::result::Result<bool, String> {
        let b = self.backend.as_ref().map_err(|e| e.clone())?;
        b.head("config").map(|c| c.is_some()).map_err(|e| e.to_string())
    }
}

impl Ctx {
    /// The configured locations, best first: `--repo`/`LIFEBOAT_REPO` (one), else the config's
    /// `locations`, else its single `location`.
    pub fn locations(&self) -> Result<Vec<LocationOptions>> {
        if let Some(r) = &self.global.repo {
            return Ok(vec![LocationOptions::new(r)]);
        }
        if !self.config.locations.is_empty() {
            return Ok(self.config.locations.clone());
        }
        match &self.config.location {
            Some(l) => Ok(vec![LocationOptions::new(l)]),
            None => Err(fail(
                NO_REPOSITORY,
                "no repository given: use --repo, LIFEBOAT_REPO or `location`/`locations` in the config",
            )),
        }
    }

    /// A stable name for "this repository" as configured (every location's URL), for local
    /// state kept per repository such as the WAL spool.
    pub fn location_key(&self) -> Result<String> {
        Ok(self
            .locations()?
            .iter()
            .map(|l| l.url.as_str())
            .collect::<Vec<_>>()
            .join(" "))
    }

    /// Every location, opened.
    pub fn open_locations(&self) -> Result<Vec<Loc>> {
        Ok(self
            .locations()?
            .into_iter()
            .map(|opts| {
                let backend = backend::open_location(&opts, false).map_err(|e| e.to_string());
                Loc { opts, backend }
            })
            .collect())
    }

    /// The location called `name`.
    pub fn named_location(&self, name: &str) -> Result<Loc> {
        let all = self.open_locations()?;
        let names: Vec<String> = all.iter().map(|l| l.name().to_string()).collect();
        all.into_iter().find(|l| l.name() == name).ok_or_else(|| {
            fail(
                USAGE,
                format!("no location named {name:?} (configured: {})", names.join(", ")),
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

    /// The storage for reading: the one location, or all of them behind a reader that falls
    /// back object by object.
    pub fn backend(&self) -> Result<Arc<dyn Backend>> {
        let locs = self.open_locations()?;
        if locs.len() == 1 {
            let loc = locs.into_iter().next().expect("one");
            let url = loc.opts.url.clone();
            return match backend::open_location(&loc.opts, false) {
                Ok(b) => Ok(b),
                Err(e) if e.is_not_found() => Err(RepoError::NotFound { location: url }.into()),
                Err(e) => Err(RepoError::from(e).into()),
            };
        }
        let mut members = Vec::new();
        let mut errors = Vec::new();
        for l in locs {
            match l.backend {
                Ok(b) => members.push(b),
                Err(e) => errors.push(e),
            }
        }
        if members.is_empty() {
            return Err(fail(
                FAILURE,
                format!("no location can be opened: {}", errors.join("; ")),
            ));
        }
        let r = FallbackReader::new(members);
        for e in errors {
            r.note_fallback(format!("location skipped: {e}"));
        }
        Ok(Arc::new(r))
    }

    /// The storage backend for `init`: the first location, creating a missing local folder.
    pub fn backend_for_init(&self) -> Result<Arc<dyn Backend>> {
        let first = self.locations()?.into_iter().next().expect("at least one location");
        Ok(backend::open_location(&first, true).map_err(RepoError::from)?)
    }

    /// Opens the repository for reading (all locations, with fallback).
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

    /// Opens the repository for writing at the first reachable location that holds it; returns
    /// it with every location (for replication afterwards) and the index of the one chosen.
    pub fn open_primary(&self) -> Result<(Repository, Vec<Loc>, usize)> {
        let locs = self.open_locations()?;
        if locs.len() == 1 {
            let repo = self.open()?;
            return Ok((repo, locs, 0));
        }
        let mut why = Vec::new();
        let mut refused = false;
        for (i, l) in locs.iter().enumerate() {
            match l.probe() {
                Ok(true) => {
                    let pass = secrets::passphrase(&self.sources(), false)?;
                    let repo = Repository::open(l.backend.clone().expect("probed"), &pass)?;
                    if i > 0 && !self.global.quiet {
                        eprintln!(
                            "lifeboat: warning: writing to location {} ({} unavailable)",
                            l.name(),
                            why.join("; ")
                        );
                    }
                    return Ok((repo, locs, i));
                }
                Ok(false) => why.push(format!("{}: no repository there", l.name())),
                Err(e) => {
                    refused |= e.contains(lifeboat_repo::backend::ACCESS_DENIED);
                    why.push(format!("{}: {e}", l.name()))
                }
            }
        }
        // Credentials refused somewhere and nothing else worked: say so with its own code.
        Err(fail(
            if refused { STORE_AUTH } else { NO_REPOSITORY },
            format!("no location holds the repository: {}", why.join("; ")),
        ))
    }

    /// Opens the repository (keys from any location) at the location called `name` alone.
    pub fn open_named(&self, name: &str) -> Result<(Repository, Loc)> {
        let loc = self.named_location(name)?;
        let b = loc
            .backend
            .clone()
            .map_err(|e| fail(FAILURE, format!("location {name}: {e}")))?;
        let any = self.open()?;
        Ok((any.at(b), loc))
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
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
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
/// `wal fetch --abort-on-error`: every failure of it must stop PostgreSQL's recovery.
fn aborts_recovery(c: &Command) -> bool {
    matches!(c, Command::Wal(crate::cli::WalCommand::Fetch(a)) if a.abort_on_error)
}

pub fn run(cli: Cli) -> Result<u8> {
    let config = match &cli.global.config {
        Some(p) => match config::load(p) {
            Ok(c) => c,
            // restore_command's config cannot be read: PostgreSQL must stop recovery, not take
            // exit 2 for "not found" and promote a server that replayed only part of its WAL.
            Err(e) if aborts_recovery(&cli.command) => {
                return Err(crate::exit::fail(
                    crate::exit::WAL_FETCH_ABORT,
                    format!(
                        "{}; exiting {} so that PostgreSQL stops recovery (--abort-on-error) instead of ending it here",
                        crate::one_line(&e),
                        crate::exit::WAL_FETCH_ABORT
                    ),
                ));
            }
            Err(e) => return Err(e),
        },
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
        Command::Replicate(a) => locations::replicate(&ctx, &a),
        Command::Locations(a) => locations::list(&ctx, &a),
    }
}
