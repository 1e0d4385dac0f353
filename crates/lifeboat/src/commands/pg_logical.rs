//! `backup` of a PostgreSQL source in logical mode.

use anyhow::Result;
use lifeboat_repo::Repository;

use super::Ctx;
use crate::cli::BackupArgs;
use crate::config::DbSource;
use crate::exit::{USAGE, fail};

/// Backs up `src` (logical); returns the exit code and the JSON result.
pub fn backup(_ctx: &Ctx, _repo: &Repository, src: &DbSource, _a: &BackupArgs) -> Result<(u8, serde_json::Value)> {
    Err(fail(
        USAGE,
        format!(
            "sources.{}: logical PostgreSQL backups are not implemented in this build yet",
            src.name
        ),
    ))
}
