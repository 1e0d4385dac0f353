//! PostgreSQL sources: dispatch to the physical or logical implementation.

use anyhow::Result;
use lifeboat_repo::Repository;

use super::Ctx;
use crate::cli::BackupArgs;
use crate::config::{DbMode, DbSource};

/// Backs up one `kind = "postgres"` source; returns the exit code and the JSON result.
pub fn backup(ctx: &Ctx, repo: &Repository, src: &DbSource, a: &BackupArgs) -> Result<(u8, serde_json::Value)> {
    match src.mode {
        DbMode::Physical => super::pg_physical::backup(ctx, repo, src, a),
        DbMode::Logical => super::pg_logical::backup(ctx, repo, src, a),
    }
}
