//! Integration tests of the check engine against real local servers: HTTP, TLS (certificates
//! made here with rcgen), a throwaway PostgreSQL, a tmpfs made full, real processes.

mod engine;
mod http;
mod pg;
mod postgres;
mod support;
mod system;
mod tls;
