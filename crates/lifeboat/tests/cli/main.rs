//! Integration tests of the `lifeboat` binary: the safety requirements, proven end to end.
//!
//! Every test runs the real binary in its own temp dir with a cheap key derivation
//! (`LIFEBOAT_INSECURE_FAST_KDF=1`). Modules are grouped by concern.

mod common;

mod concurrency;
mod corruption;
mod crash;
mod disk_full;
mod errors;
mod health;
mod moto;
mod pg_logical;
mod pg_physical;
mod pg_wal_locations;
mod restore_safety;
mod retention;
mod s3;
mod secrecy;
mod wal_compression;
mod wal_locations;
mod wal_push;
