//! # lifeboat-repo
//!
//! The repository engine of lifeboat: an encrypted, deduplicated, compressed store of snapshots
//! on any object store. It knows nothing of PostgreSQL, the command line or HTTP; those are built
//! on top of it. The on-disk contract is `docs/format.md`.
//!
//! ```no_run
//! use lifeboat_repo::{Repository, InitOptions, backend, archiver};
//! let store = backend::create("/var/backups/lifeboat")?;
//! let repo = Repository::init(store, b"passphrase", &InitOptions::default())?;
//! let opts = archiver::BackupOptions { paths: vec!["/etc/myapp".into()], ..Default::default() };
//! let done = archiver::backup(&repo, &opts, &Default::default())?;
//! println!("snapshot {}", done.snapshot_id);
//! # Ok::<(), lifeboat_repo::RepoError>(())
//! ```

pub mod archiver;
pub mod attestation;
pub mod backend;
mod blob_sink;
pub mod check;
pub mod chunker;
pub mod crypto;
mod error;
mod fixed_sink;
pub mod format;
mod id;
pub mod index;
pub mod locations;
pub mod maintenance;
pub mod mirror;
pub mod named;
pub mod object_lock;
pub mod packer;
pub mod replicate;
pub mod repository;
pub mod restorer;
pub mod retention;
pub mod snapshot_writer;
pub mod walk;

/// Compiles glob patterns into one matcher; `what` ("include", "exclude") names them in errors.
pub fn glob_set(patterns: &[String], what: &str) -> Result<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for g in patterns {
        b.add(globset::Glob::new(g).map_err(|e| RepoError::Invalid(format!("{what} pattern {g:?}: {e}")))?);
    }
    b.build()
        .map_err(|e| RepoError::Invalid(format!("{what} patterns: {e}")))
}

pub use error::{RepoError, Result};
pub use id::Id;
pub use repository::{Config, InitOptions, Repository};
