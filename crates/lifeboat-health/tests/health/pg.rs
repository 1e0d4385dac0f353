//! A throwaway PostgreSQL 15 cluster for tests: initdb + pg_ctl on a free 127.0.0.1 port, data
//! and socket in a temp dir. Test-only and small on purpose. Shared by the engine tests and the
//! binary's CLI tests (included there by path), so it uses nothing but std and tempfile.

#![allow(dead_code)]

use std::process::Command;

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A throwaway PostgreSQL 15 cluster on a free 127.0.0.1 port, run as the `postgres` user when
/// the tests run as root (initdb refuses root). Password auth (scram) over TCP.
pub struct Pg {
    pub dir: tempfile::TempDir,
    pub port: u16,
    running: bool,
}

pub const PG_PASSWORD: &str = "pg-test-secret-7731";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn pg_command(bin: &str) -> Command {
    let exe = format!("{PG_BIN}/{bin}");
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &exe]);
        c
    } else {
        Command::new(exe)
    }
}

fn ok(c: &mut Command, what: &str) {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Pg {
    /// initdb + start, with WAL archiving on and an archive command that always fails (so the
    /// archiver check can be driven into failure by switching WAL).
    pub fn start() -> Pg {
        Pg::start_with(&[], "")
    }

    /// A cluster serving TLS with this certificate chain and key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Pg {
        Pg::start_with(
            &[("server.crt", cert_pem), ("server.key", key_pem)],
            "-c ssl=on -c ssl_cert_file=DIR/server.crt -c ssl_key_file=DIR/server.key",
        )
    }

    /// `files` are written into the cluster's folder (private to the server user); `extra` is
    /// added to the server options, with `DIR` standing for that folder.
    pub fn start_with(files: &[(&str, &str)], extra: &str) -> Pg {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), PG_PASSWORD).unwrap();
        for (name, body) in files {
            let f = dir.path().join(name);
            std::fs::write(&f, body).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if is_root() {
            ok(
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()),
                "chown",
            );
        }
        let data = dir.path().join("data");
        ok(
            pg_command("initdb")
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ])
                .arg(format!("--pwfile={}", dir.path().join("pw").display())),
            "initdb",
        );
        Pg::launch(dir, extra)
    }

    /// Starts the cluster in `dir/data` on a free port, its socket in `dir`.
    fn launch(dir: tempfile::TempDir, extra: &str) -> Pg {
        let data = dir.path().join("data");
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c wal_level=replica -c archive_mode=on -c archive_command=/bin/false {}",
            dir.path().display(),
            extra.replace("DIR", &dir.path().display().to_string())
        );
        ok(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
            "pg_ctl start",
        );
        Pg {
            dir,
            port,
            running: true,
        }
    }

    /// A streaming standby of this cluster (pg_basebackup over the local socket, `-R`).
    pub fn standby(&self) -> Pg {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            ok(
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()),
                "chown",
            );
        }
        ok(
            pg_command("pg_basebackup")
                .arg("-D")
                .arg(dir.path().join("data"))
                .arg("-h")
                .arg(self.dir.path())
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-R",
                    "-X",
                    "stream",
                    "--no-sync",
                ]),
            "pg_basebackup",
        );
        Pg::launch(dir, "")
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres", self.port)
    }

    pub fn stop(&mut self) {
        if self.running {
            self.running = false;
            let _ = pg_command("pg_ctl")
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}
