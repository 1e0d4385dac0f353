//! Health checks with the recovery plan's alert levels.
//!
//! Every recovery step in the plan ends with "run the comprehensive health check"; this crate is
//! that check engine. A check ([`CheckSpec`]) is read from a `[[checks]]` table of `lifeboat.toml`
//! ([`parse_checks`]), all checks run concurrently under their own and a global timeout
//! ([`run`]), and the outcome is a [`Report`] that a person (table and verdict), a script (exit
//! code by the worst [`Level`]) and Prometheus or jq (`--json`, [`SCHEMA_VERSION`]) can all read.
//!
//! The crate knows nothing of the repository or PostgreSQL backups: the `backup` kind asks a
//! [`SnapshotAges`] the binary supplies for the newest snapshot time.

mod checks;
mod level;
mod report;
mod runner;
mod spec;
mod units;

pub use level::Level;
pub use report::{Change, CheckResult, Counts, Report, SCHEMA_VERSION, Status, changes};
pub use runner::{Context, History, NewestSnapshot, RunOptions, SnapshotAges, WalCopies, WalCopy, run, run_blocking};
pub use spec::{
    CheckSpec, ConfigError, HttpProbe, PostgresProbe, Probe, RawCheck, RawChecks, TlsProbe, default_levels,
    parse_checks,
};
pub use units::{format_duration, parse_duration, parse_ratio};
