//! # lifeboat-pg
//!
//! PostgreSQL support for lifeboat, on top of the repository engine (`lifeboat-repo`, which knows
//! nothing of databases): finding the server programs ([`tools`]), connection settings that keep
//! passwords off command lines ([`conn`]), SQL through `psql` ([`client`]), and throwaway
//! clusters for restore tests and for every test ([`cluster`]); logical backups and restores
//! ([`logical`]) with table [`fingerprint`]s, and restore tests ([`verify`], [`verify_physical`]); physical backups
//! ([`physical`] through pg_basebackup, [`physical_local`] from the data directory), WAL archiving ([`wal`], [`wal_ahead`], [`stream`], [`wal_check`], [`wal_retention`]) and
//! point-in-time restore ([`restore`]).

pub mod client;
pub mod cluster;
pub mod conn;
pub mod db_properties;
mod error;
pub mod fingerprint;
pub mod logical;
pub mod map_fault;
pub mod physical;
pub mod physical_local;
pub mod psql;
pub mod restore;
pub mod stream;
pub mod tablespaces;
#[cfg(test)]
mod test_support;
pub mod tools;
pub mod verify;
pub mod verify_physical;
pub mod wal;
pub mod wal_ahead;
pub mod wal_check;
mod wal_map;
pub mod wal_names;
pub mod wal_prefetch;
pub mod wal_retention;
pub mod worker_lock;

pub use client::Client;
pub use cluster::{ClusterOptions, ScratchCluster};
pub use conn::ConnInfo;
pub use error::{ConnectFailure, PgError, Result, classify_client_error, is_transient, last_lines};
pub use tools::{RunAs, Tools};
