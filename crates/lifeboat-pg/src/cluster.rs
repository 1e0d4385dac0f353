//! Throwaway PostgreSQL clusters: a temporary data folder, a free loopback port, a socket folder
//! of their own, stopped and removed on drop.
//!
//! Used in production by restore tests (`verify restore`, physical restores with `--start`) and
//! by every test. `initdb` and `postgres` refuse to run as root, so when lifeboat runs as root
//! they run as the `postgres` OS user ([`RunAs`]) and the folder is handed to that user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::conn::ConnInfo;
use crate::error::{PgError, Result, last_lines};
use crate::tools::{RunAs, Tools};

/// How to create a scratch cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Extra `postgresql.conf` settings, e.g. `("wal_level", "replica")`. Values are written
    /// as given (quote strings yourself: `"'lifeboat wal push %p'"`).
    pub settings: Vec<(String, String)>,
    /// Superuser password (password authentication over TCP when set; trust otherwise).
    pub password: Option<String>,
    /// Extra environment for the server (inherited by `archive_command`, `restore_command`).
    pub env: Vec<(String, String)>,
    /// Parent folder for the temporary folder (default: the system's temp folder).
    pub parent: Option<PathBuf>,
}

/// A running (or stopped) throwaway cluster. Dropping it stops the server (immediate mode) and
/// removes its folder, also when a test fails.
pub struct ScratchCluster {
    tools: Tools,
    run_as: Option<RunAs>,
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
    password: Option<String>,
    user: String,
    running: bool,
}

/// Picks a free loopback TCP port (bind to port 0, read it back, release it).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| PgError::io("127.0.0.1:0", e))?;
    Ok(l.local_addr().map_err(|e| PgError::io("127.0.0.1:0", e))?.port())
}

impl ScratchCluster {
    /// Runs `initdb` into a new temporary folder and writes the settings. Not started.
    pub fn create(tools: &Tools, opts: &ClusterOptions) -> Result<ScratchCluster> {
        let mut c = ScratchCluster::empty(tools, opts)?;
        let mut cmd = c.server_command("initdb")?;
        cmd.arg("-D")
            .arg(&c.data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]);
        let pwfile = c.root().join("pwfile");
        if let Some(p) = &opts.password {
            std::fs::write(&pwfile, p).map_err(|e| PgError::io(&pwfile, e))?;
            if let Some(r) = c.run_as {
                r.chown(&pwfile)?;
            }
            cmd.arg(format!("--pwfile={}", pwfile.display()))
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
        } else {
            cmd.args(["--auth=trust"]);
        }
        run(cmd, "initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        let mut conf = String::from("\n# lifeboat scratch cluster\nlisten_addresses = '127.0.0.1'\nfsync = off\n");
        for (k, v) in &opts.settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        append(&c.data.join("postgresql.conf"), &conf)?;
        c.password = opts.password.clone();
        Ok(c)
    }

    /// Adopts an existing data folder (e.g. one just restored) as a scratch cluster: it is
    /// started on a free port with its own socket folder, and removed on drop only if `own_it`.
    pub fn adopt(tools: &Tools, data: &Path, opts: &ClusterOptions) -> Result<ScratchCluster> {
        let mut c = ScratchCluster::empty(tools, opts)?;
        c.data = data.to_path_buf();
        c.password = opts.password.clone();
        Ok(c)
    }

    /// Takes charge of a server already running on `data` (e.g. started by `restore --start`):
    /// it is stopped (immediate) on drop; the data folder itself is left alone.
    pub fn attach_running(tools: &Tools, data: &Path, port: u16) -> Result<ScratchCluster> {
        let mut c = ScratchCluster::empty(tools, &ClusterOptions::default())?;
        c.data = data.to_path_buf();
        c.port = port;
        c.running = true;
        Ok(c)
    }

    /// A temporary folder with no data folder in it yet (`root/data`, see
    /// [`ScratchCluster::data_dir`]): for restoring a physical backup into, then
    /// [`ScratchCluster::start`]. Removed with everything in it on drop.
    pub fn unformatted(tools: &Tools, opts: &ClusterOptions) -> Result<ScratchCluster> {
        ScratchCluster::empty(tools, opts)
    }

    /// Connects as this role from now on (a restored cluster's superuser need not be called
    /// `postgres`).
    pub fn set_user(&mut self, user: &str) {
        self.user = user.to_string();
    }

    fn empty(tools: &Tools, opts: &ClusterOptions) -> Result<ScratchCluster> {
        let run_as = RunAs::for_server()?;
        let mut b = tempfile::Builder::new();
        b.prefix("lifeboat-pg-");
        let dir = match &opts.parent {
            Some(p) => b.tempdir_in(p),
            None => b.tempdir(),
        }
        .map_err(|e| PgError::io(std::env::temp_dir(), e))?;
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir(&socket_dir).map_err(|e| PgError::io(&socket_dir, e))?;
        if let Some(r) = run_as {
            r.chown(dir.path())?;
            r.chown(&socket_dir)?;
        }
        Ok(ScratchCluster {
            tools: tools.clone(),
            run_as,
            dir: Some(dir),
            data,
            socket_dir,
            port: free_port()?,
            env: opts.env.clone(),
            password: None,
            user: "postgres".into(),
            running: false,
        })
    }

    /// The temporary folder holding everything.
    pub fn root(&self) -> &Path {
        self.dir.as_ref().expect("folder kept until drop").path()
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The TCP port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The unix socket folder.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The OS user the server runs as (None: the current user).
    pub fn run_as(&self) -> Option<RunAs> {
        self.run_as
    }

    /// Connection settings for a database over TCP (password included when set).
    pub fn conn(&self, db: &str) -> ConnInfo {
        let url = match &self.password {
            Some(p) => format!(
                "postgres://{}:{}@127.0.0.1:{}/{db}",
                encode(&self.user),
                encode(p),
                self.port
            ),
            None => format!("postgres://{}@127.0.0.1:{}/{db}", encode(&self.user), self.port),
        };
        ConnInfo::parse(&url).expect("well-formed url")
    }

    /// The URL without password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{}@127.0.0.1:{}/{db}", encode(&self.user), self.port)
    }

    /// A connected client.
    pub fn client(&self, db: &str) -> Result<Client> {
        Client::connect(&self.tools, &self.conn(db))
    }

    /// Runs a server program as the server's user, with the cluster's environment, from a
    /// folder that user can enter.
    pub fn server_command(&self, tool: &str) -> Result<Command> {
        let mut cmd = self.tools.command(tool)?;
        cmd.current_dir(self.root());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(r) = self.run_as {
            r.apply(&mut cmd);
        }
        Ok(cmd)
    }

    /// Starts the server and waits until it accepts connections (for a cluster in recovery:
    /// until it is consistent, or has finished recovery if hot standby is off).
    pub fn start(&mut self) -> Result<()> {
        self.start_with_timeout(Duration::from_secs(120))
    }

    /// [`ScratchCluster::start`] with a timeout. A port taken between choosing it and binding
    /// it (another process started meanwhile) is replaced by a new free port, up to 3 times.
    pub fn start_with_timeout(&mut self, timeout: Duration) -> Result<()> {
        let mut tries = 0;
        loop {
            match self.start_once(timeout) {
                Err(PgError::ToolFailed { message, .. })
                    if tries < 3 && (message.contains("could not bind") || message.contains("already in use")) =>
                {
                    tries += 1;
                    self.running = false;
                    self.port = free_port()?;
                }
                r => return r,
            }
        }
    }

    fn start_once(&mut self, timeout: Duration) -> Result<()> {
        let log = self.root().join("server.log");
        let mut cmd = self.server_command("pg_ctl")?;
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .arg("-w")
            .arg("-t")
            .arg(timeout.as_secs().to_string())
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.socket_dir.display()
            ));
        self.running = true; // even on failure: drop must try to stop a half-started server
        run(cmd, "pg_ctl start").map_err(|e| match e {
            PgError::ToolFailed { tool, status, message } => PgError::ToolFailed {
                tool,
                status,
                message: format!("{message} / server log: {}", self.log_tail()),
            },
            e => e,
        })?;
        Ok(())
    }

    /// The last lines of the server log (for error messages).
    pub fn log_tail(&self) -> String {
        let log = self.root().join("server.log");
        std::fs::read_to_string(&log)
            .map(|s| last_lines(&s))
            .unwrap_or_default()
    }

    /// The whole server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root().join("server.log")).unwrap_or_default()
    }

    /// Stops the server cleanly (`fast`: a shutdown checkpoint is written).
    pub fn stop(&mut self) -> Result<()> {
        self.stop_mode("fast")
    }

    /// Stops the server like a crash (`immediate`: no checkpoint).
    pub fn crash(&mut self) -> Result<()> {
        self.stop_mode("immediate")
    }

    fn stop_mode(&mut self, mode: &str) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let mut cmd = self.server_command("pg_ctl")?;
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "60"]);
        let r = run(cmd, "pg_ctl stop");
        self.running = false;
        r.map(|_| ())
    }

    /// Waits until `check` returns true, polling every 100 ms.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if check() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(PgError::Timeout {
            what: what.into(),
            secs: timeout.as_secs(),
        })
    }

    /// Leaves the folder in place on drop (for debugging a failed test). The server is still
    /// stopped.
    pub fn keep_folder(&mut self) -> PathBuf {
        let d = self.dir.take().expect("folder").keep();
        self.dir = None;
        d
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        if self.running
            && let Ok(mut cmd) = self.tools.command("pg_ctl")
        {
            cmd.arg("stop")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "30"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(dir) = &self.dir {
                cmd.current_dir(dir.path());
            }
            if let Some(r) = self.run_as {
                r.apply(&mut cmd);
            }
            let _ = cmd.status();
        }
    }
}

fn encode(p: &str) -> String {
    p.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| PgError::io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| PgError::io(path, e))
}

/// Runs a command to completion; a failure carries the last lines of its error output.
pub(crate) fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| PgError::Spawn {
            tool: what.into(),
            source: e,
        })?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).into_owned();
        if msg.trim().is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        return Err(PgError::ToolFailed {
            tool: what.into(),
            status: out.status.to_string(),
            message: last_lines(&msg),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
