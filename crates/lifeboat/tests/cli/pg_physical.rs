//! Physical PostgreSQL backups end to end: real clusters, real pgbench load, real WAL archiving
//! through `lifeboat wal push`, restores through `lifeboat wal fetch`. Skipped (with a message)
//! when the PostgreSQL server programs are not installed. Every cluster is a ScratchCluster,
//! stopped and removed on drop, also when an assertion fails.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lifeboat_pg::{ClusterOptions, RunAs, ScratchCluster, Tools};

use crate::common::{PASSWORD, Run, bin};

/// A scratch folder for one test: passphrase, cache and repository, and the server programs.
/// lifeboat finds the repository through `LIFEBOAT_REPO`, or through `LIFEBOAT_CONFIG` when the
/// test keeps it in a config ([`PgEnv::with_config`]).
pub(crate) struct PgEnv {
    _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
    repo: PathBuf,
    config: Option<PathBuf>,
    pass_file: PathBuf,
    cache: PathBuf,
    pub(crate) run_as: Option<RunAs>,
    pub(crate) tools: Tools,
}

impl PgEnv {
    fn new() -> Option<PgEnv> {
        let env = PgEnv::scratch("lifeboat-pgtest-", None)?;
        env.lifeboat(&["init"]).ok();
        Some(env)
    }

    /// An environment whose repository is the one `config` (under the scratch root, written by
    /// the test before it runs lifeboat) names; nothing is initialised.
    pub(crate) fn with_config(prefix: &str, config: &str) -> Option<PgEnv> {
        PgEnv::scratch(prefix, Some(config))
    }

    fn scratch(prefix: &str, config: Option<&str>) -> Option<PgEnv> {
        let tools = match Tools::find() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipped: {e}");
                return None;
            }
        };
        let run_as = RunAs::for_server().unwrap();
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let pass_file = root.join("passphrase");
        std::fs::write(&pass_file, PASSWORD).unwrap();
        let cache = root.join("cache");
        std::fs::create_dir(&cache).unwrap();
        let env = PgEnv {
            repo: root.join("repo"),
            config: config.map(|c| root.join(c)),
            _dir: dir,
            root,
            pass_file,
            cache,
            run_as,
            tools,
        };
        env.give(&env.root.clone());
        Some(env)
    }

    /// The variable that tells lifeboat where the repository is, and its value.
    fn repo_var(&self) -> (&'static str, &Path) {
        match &self.config {
            Some(c) => ("LIFEBOAT_CONFIG", c),
            None => ("LIFEBOAT_REPO", &self.repo),
        }
    }

    /// Hands a path to the server's OS user (lifeboat runs as that user here, like in production
    /// where archive_command runs as the server).
    pub(crate) fn give(&self, p: &Path) {
        if let Some(r) = self.run_as {
            r.chown_tree(p).unwrap();
        }
    }

    fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.root.join(name);
        std::fs::create_dir_all(&p).unwrap();
        self.give(&p);
        p
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let (var, value) = self.repo_var();
        let mut c = Command::new(bin());
        c.env_remove("LIFEBOAT_REPO")
            .env_remove("LIFEBOAT_CONFIG")
            .args(args)
            .env(var, value)
            .env("LIFEBOAT_PASSWORD_FILE", &self.pass_file)
            .env("LIFEBOAT_CACHE_DIR", &self.cache)
            .env("LIFEBOAT_INSECURE_FAST_KDF", "1")
            .env_remove("LIFEBOAT_PASSWORD")
            .current_dir(&self.root)
            .stdin(Stdio::null());
        if let Some(r) = self.run_as {
            c.uid(r.uid).gid(r.gid);
        }
        c
    }

    pub(crate) fn lifeboat(&self, args: &[&str]) -> Run {
        let o = self.cmd(args).output().unwrap();
        let a: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        Run::from_output(&a, o)
    }

    pub(crate) fn archive_command(&self) -> String {
        let (var, value) = self.repo_var();
        format!(
            "'{var}={} LIFEBOAT_PASSWORD_FILE={} LIFEBOAT_CACHE_DIR={} {} --quiet wal push %p'",
            value.display(),
            self.pass_file.display(),
            self.cache.display(),
            bin().display()
        )
    }

    fn cluster(&self, archive: bool, password: Option<&str>) -> ScratchCluster {
        let mut settings = vec![("wal_level".to_string(), "replica".to_string())];
        if archive {
            settings.push(("archive_mode".into(), "on".into()));
            settings.push(("archive_command".into(), self.archive_command()));
            settings.push(("archive_timeout".into(), "2".into()));
        }
        let opts = ClusterOptions {
            settings,
            password: password.map(str::to_string),
            ..Default::default()
        };
        let mut c = ScratchCluster::create(&self.tools, &opts).unwrap();
        c.start().unwrap();
        c
    }

    fn config(&self, name: &str, url: &str) -> PathBuf {
        let p = self.root.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!("[sources.db]\nkind = \"postgres\"\nurl = \"{url}\"\nmode = \"physical\"\ndatabases = \"all\"\n"),
        )
        .unwrap();
        self.give(&p);
        p
    }

    /// A config with the physical source `db` of cluster `c`, read by the local method, with
    /// one restore-test check.
    fn local_config(&self, name: &str, c: &ScratchCluster, check: &str) -> PathBuf {
        let p = self.root.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "[sources.db]\nkind = \"postgres\"\nurl = \"{}\"\nmode = \"physical\"\ndatabases = \"all\"\n\
                 physical_method = \"local\"\ndata_dir = \"{}\"\nchecks = [\"{check}\"]\n",
                c.url("postgres"),
                c.data_dir().display()
            ),
        )
        .unwrap();
        self.give(&p);
        p
    }

    fn pgbench(&self, c: &ScratchCluster, args: &[&str]) -> std::process::Child {
        let mut cmd = self.tools.command("pgbench").unwrap();
        cmd.args(args)
            .arg(c.url("postgres"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    }
}

fn wait_archived(c: &ScratchCluster) {
    let db = c.client("postgres").unwrap();
    db.query("SELECT pg_switch_wal()").unwrap();
    c.wait_for("WAL archiving to catch up", Duration::from_secs(60), || {
        db.query_value("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
            .ok()
            .flatten()
            .as_deref()
            == Some("0")
    })
    .unwrap();
}

fn value(c: &ScratchCluster, sql: &str) -> String {
    c.client("postgres")
        .unwrap()
        .query_value(sql)
        .unwrap()
        .unwrap_or_default()
}

/// Restores with --start on a free port and takes charge of the started server.
fn restore_started(env: &PgEnv, name: &str, extra: &[&str]) -> (ScratchCluster, Run, f64) {
    let port = lifeboat_pg::cluster::free_port().unwrap();
    let sock = env.mkdir(&format!("{name}-sock"));
    let data = env.root.join(name);
    let port_s = port.to_string();
    let mut args = vec![
        "--json",
        "restore",
        "db",
        "latest",
        "--data-dir",
        data.to_str().unwrap(),
        "--start",
        "--port",
        &port_s,
        "--socket-dir",
        sock.to_str().unwrap(),
        "--start-timeout",
        "120s",
    ];
    args.extend_from_slice(extra);
    let t0 = Instant::now();
    let run = env.lifeboat(&args);
    let attached = ScratchCluster::attach_running(&env.tools, &data, port).unwrap();
    run.ok();
    // The server never keeps the passphrase in its environment (a superuser could read it with
    // COPY … FROM PROGRAM 'env'); lifeboat's path variables reach it as absolute paths.
    let pid = std::fs::read_to_string(data.join("postmaster.pid")).unwrap();
    let environ = std::fs::read(format!("/proc/{}/environ", pid.lines().next().unwrap().trim())).unwrap();
    for var in String::from_utf8_lossy(&environ).split('\0') {
        assert!(
            !var.starts_with("LIFEBOAT_PASSWORD="),
            "the passphrase in the server's environment"
        );
        if let Some((k, v)) = var.split_once('=')
            && ["LIFEBOAT_CONFIG", "LIFEBOAT_REPO", "LIFEBOAT_PASSWORD_FILE"].contains(&k)
        {
            assert!(Path::new(v).is_absolute(), "{var}");
        }
    }
    // RTO: until the database answers a query.
    attached
        .wait_for("the restored server to answer", Duration::from_secs(60), || {
            attached.client("postgres").is_ok()
        })
        .unwrap();
    let rto = t0.elapsed().as_secs_f64();
    (attached, run, rto)
}

#[test]
fn physical_backup_under_load_then_pitr_and_database_loss() {
    let Some(env) = PgEnv::new() else { return };
    let mut src = env.cluster(true, None);
    let cfg = env.config("db", &src.url("postgres"));
    let cfg = cfg.to_str().unwrap();
    assert!(env.pgbench(&src, &["-i", "-s", "2", "-q"]).wait().unwrap().success());

    // Backup while pgbench writes.
    let mut load = env.pgbench(&src, &["-n", "-T", "6", "-c", "2"]);
    let backup = env.lifeboat(&["--config", cfg, "--json", "backup", "db"]);
    backup.ok();
    let b = backup.json();
    assert_eq!(b["mode"], "physical");
    let pg = &b["postgres"];
    assert_eq!(pg["timeline"], 1);
    assert!(pg["start_lsn"].as_str().unwrap().contains('/'));
    assert!(load.wait().unwrap().success());

    // Unchanged relation files deduplicate: two backups in a row, the second stores little.
    env.lifeboat(&["--config", cfg, "backup", "db"]).ok();
    let again = env.lifeboat(&["--config", cfg, "--json", "backup", "db"]);
    again.ok();
    let s = again.json();
    let (read, added) = (
        s["summary"]["bytes_read"].as_u64().unwrap(),
        s["summary"]["bytes_added_raw"].as_u64().unwrap(),
    );
    assert!(
        added * 2 < read,
        "repeated backup stored {added} of {read} bytes: no dedup"
    );

    // PITR: the first transaction is there, the second is not.
    let db = src.client("postgres").unwrap();
    db.execute("CREATE TABLE marks (t text); INSERT INTO marks VALUES ('first');")
        .unwrap();
    wait_archived(&src);
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = db
        .query_value("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')")
        .unwrap()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    db.execute("INSERT INTO marks VALUES ('second');").unwrap();
    wait_archived(&src);
    env.lifeboat(&["check"]).ok();
    env.lifeboat(&["wal", "check"]).ok();

    // --no-archive: a test copy must not archive its own timeline into the production archive.
    let (pitr, _, _) = restore_started(&env, "pitr", &["--target-time", &t1, "--no-archive"]);
    let marks = pitr
        .client("postgres")
        .unwrap()
        .query("SELECT t FROM marks ORDER BY t")
        .unwrap();
    assert_eq!(marks, vec![vec![Some("first".to_string())]], "PITR to {t1}");
    drop(pitr);

    // Database loss under load: restore latest + WAL, measure what was lost.
    let mut load = env.pgbench(&src, &["-n", "-T", "4", "-c", "2"]);
    assert!(load.wait().unwrap().success());
    let before_count: i64 = value(&src, "SELECT count(*) FROM pgbench_history").parse().unwrap();
    let loss_time = value(&src, "SELECT extract(epoch FROM clock_timestamp())");
    let data_dir = src.data_dir().to_path_buf();
    src.crash().unwrap();
    std::fs::remove_dir_all(&data_dir).unwrap();

    let (restored, run, rto) = restore_started(&env, "lost", &[]);
    let r = run.json();
    assert!(r["started"]["recovery_secs"].as_f64().is_some(), "{r}");
    let after_count: i64 = value(&restored, "SELECT count(*) FROM pgbench_history")
        .parse()
        .unwrap();
    let last_commit = value(&restored, "SELECT extract(epoch FROM max(mtime)) FROM pgbench_history");
    let rpo = loss_time.parse::<f64>().unwrap() - last_commit.parse::<f64>().unwrap();
    eprintln!(
        "database loss: {after_count} of {before_count} pgbench transactions restored; RPO {rpo:.1} s (archive_timeout 2 s), RTO {rto:.1} s (restore + recovery until a query answers)"
    );
    assert!(after_count <= before_count);
    assert!(after_count > 0);
    assert!(rpo < 30.0, "RPO {rpo} s");
    // The restored server runs on a new timeline and keeps archiving into the repository.
    assert_eq!(value(&restored, "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(value(&restored, "SELECT count(*) FROM marks"), "2");

    // WAL stays continuous across the new timeline the restore started.
    wait_archived(&restored);
    let chk = env.lifeboat(&["--json", "wal", "check"]);
    chk.ok();
    let c = chk.json();
    assert_eq!(c["clusters"][0]["newest_timeline"], 2, "{c}");
    assert_eq!(value(&restored, "SELECT timeline_id FROM pg_control_checkpoint()"), "2");

    // Retention: keeping only the newest backup deletes the WAL before it; what is left is
    // still continuous, and prune + check agree nothing needed was lost.
    let f = env.lifeboat(&["--json", "forget", "--keep-last", "1"]);
    f.ok();
    let deleted = f.json()["wal"][0]["deleted"].as_array().unwrap().len();
    assert!(deleted > 0, "{}", f.stdout);
    env.lifeboat(&["wal", "check"]).ok();
    env.lifeboat(&["prune", "--grace", "0s", "--unsafe-short-grace"]).ok();
    env.lifeboat(&["check", "--read-data"]).ok();
}

#[test]
fn bad_input_gets_distinct_exit_codes() {
    let Some(env) = PgEnv::new() else { return };
    // Unreachable server.
    let port = lifeboat_pg::cluster::free_port().unwrap();
    let cfg = env.config("nobody", &format!("postgres://postgres@127.0.0.1:{port}/postgres"));
    env.lifeboat(&["--config", cfg.to_str().unwrap(), "backup", "db"])
        .expect_code(12)
        .one_line_error(&["unreachable"]);

    // Wrong credentials: the password never shows up.
    let with_pw = env.cluster(true, Some("sekrit-pw"));
    let cfg = env.config(
        "wrongpw",
        &format!("postgres://postgres:not-the-pw@127.0.0.1:{}/postgres", with_pw.port()),
    );
    let r = env.lifeboat(&["--config", cfg.to_str().unwrap(), "backup", "db"]);
    r.expect_code(13).one_line_error(&["authentication failed"]);
    assert!(!r.stderr.contains("not-the-pw"), "{r:?}");
    drop(with_pw);

    // Server without WAL archiving.
    let plain = env.cluster(false, None);
    let cfg = env.config("plain", &plain.url("postgres"));
    env.lifeboat(&["--config", cfg.to_str().unwrap(), "backup", "db"])
        .expect_code(14)
        .one_line_error(&["archive_mode"]);
    drop(plain);

    // The same WAL segment name pushed twice with different content.
    let fake = env.mkdir("fake-data");
    std::fs::create_dir_all(fake.join("global")).unwrap();
    std::fs::create_dir_all(fake.join("pg_wal/archive_status")).unwrap();
    std::fs::write(
        fake.join("global/pg_control"),
        7_000_000_000_000_000_001u64.to_ne_bytes(),
    )
    .unwrap();
    let seg = fake.join("pg_wal/000000010000000000000001");
    let a: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&seg, &a).unwrap();
    env.give(&fake);
    let push = |env: &PgEnv| {
        env.lifeboat(&[
            "wal",
            "push",
            "pg_wal/000000010000000000000001",
            "--data-dir",
            fake.to_str().unwrap(),
        ])
    };
    push(&env).ok();
    push(&env).ok(); // idempotent (fast path)
    std::fs::write(&seg, b"something else entirely").unwrap();
    push(&env).expect_code(15).one_line_error(&["different content"]);
    // Nothing was overwritten: fetching returns the first content.
    let out = fake.join("pg_wal/RESTORED");
    env.lifeboat(&[
        "wal",
        "fetch",
        "000000010000000000000001",
        "pg_wal/RESTORED",
        "--data-dir",
        fake.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(std::fs::read(&out).unwrap(), a);
    // Repository unreachable: an ordinary failure while the backlog is small; over the queue
    // limit, critical (17) by default, or dropped when configured so.
    for i in 2..5 {
        std::fs::write(
            fake.join(format!("pg_wal/archive_status/00000001000000000000000{i}.ready")),
            "",
        )
        .unwrap();
    }
    let seg2 = fake.join("pg_wal/000000010000000000000002");
    std::fs::write(&seg2, b"segment two").unwrap();
    env.give(&fake);
    // `wal <verb> <args> --data-dir <fake> <extra>` against a repository that does not exist.
    let repo_gone = |verb_args: &[&str], extra: &[&str]| {
        let mut args = vec!["wal"];
        args.extend_from_slice(verb_args);
        args.extend_from_slice(&["--data-dir", fake.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let o = env
            .cmd(&args)
            .env("LIFEBOAT_REPO", env.root.join("gone"))
            .output()
            .unwrap();
        Run::from_output(&[], o)
    };
    let push2 = |extra: &[&str]| repo_gone(&["push", "pg_wal/000000010000000000000002"], extra);
    push2(&["--queue-max", "10"]).expect_code(7);
    push2(&["--queue-max", "2"])
        .expect_code(17)
        .one_line_error(&["critical", "3 segments"]);
    let dropped = push2(&["--queue-max", "2", "--on-queue-full", "drop"]);
    dropped.ok();
    assert!(dropped.stderr.contains("CRITICAL: dropped WAL segment"), "{dropped:?}");

    // Not in the repository: the "not found" answer restore_command needs.
    env.lifeboat(&[
        "wal",
        "fetch",
        "000000010000000000000009",
        "pg_wal/X",
        "--data-dir",
        fake.to_str().unwrap(),
    ])
    .expect_code(16);
    // ... also with --abort-on-error, which changes only real failures: the repository gone is
    // 7 (PostgreSQL: "not found", recovery ends there) without it, 200 (recovery stops) with it.
    let fetch_gone = |extra: &[&str]| repo_gone(&["fetch", "000000010000000000000001", "pg_wal/Y"], extra);
    fetch_gone(&[]).expect_code(7);
    fetch_gone(&["--abort-on-error"])
        .expect_code(200)
        .one_line_error(&["stops recovery", "gone"]);
    assert!(!fake.join("pg_wal/Y").exists());
    env.lifeboat(&[
        "wal",
        "fetch",
        "000000010000000000000009",
        "pg_wal/X",
        "--abort-on-error",
        "--data-dir",
        fake.to_str().unwrap(),
    ])
    .expect_code(16);
    // A config restore_command cannot read is a real failure too: 200, not usage's 2 (which
    // PostgreSQL would take for "not found").
    let missing = env.root.join("no-such-config.toml");
    let fetch_config = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            missing.to_str().unwrap(),
            "wal",
            "fetch",
            "000000010000000000000001",
            "pg_wal/Z",
            "--data-dir",
            fake.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        env.lifeboat(&args)
    };
    fetch_config(&[]).expect_code(2);
    fetch_config(&["--abort-on-error"])
        .expect_code(200)
        .one_line_error(&["no-such-config.toml", "stops recovery"]);
}

#[test]
fn disk_full_during_restore_is_reported() {
    let Some(env) = PgEnv::new() else { return };
    let src = env.cluster(true, None);
    let cfg = env.config("db", &src.url("postgres"));
    env.lifeboat(&["--config", cfg.to_str().unwrap(), "backup", "db"]).ok();
    let small = env.mkdir("small");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    env.give(&small);
    let data = small.join("data");
    env.lifeboat(&["restore", "db", "latest", "--data-dir", data.to_str().unwrap()])
        .expect_code(10)
        .one_line_error(&["disk full"]);
}

#[test]
fn wal_stream_keeps_the_rpo_in_seconds() {
    let Some(env) = PgEnv::new() else { return };
    let mut src = env.cluster(true, None);
    let db = src.client("postgres").unwrap();
    // No forced segment switches: without the stream, the RPO would be a whole segment.
    db.execute("ALTER SYSTEM SET archive_timeout = 0; SELECT pg_reload_conf();")
        .unwrap();
    db.execute("CREATE TABLE ticks (n int, at timestamptz DEFAULT clock_timestamp());")
        .unwrap();
    let cfg = env.config("db", &src.url("postgres"));
    let cfg = cfg.to_str().unwrap().to_string();
    env.lifeboat(&["--config", &cfg, "backup", "db"]).ok();

    let mut stream = env
        .cmd(&[
            "--config",
            &cfg,
            "wal",
            "stream",
            "--interval",
            "500ms",
            "--duration",
            "120s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    src.wait_for("the replication slot", Duration::from_secs(30), || {
        db.query_value("SELECT count(*) FROM pg_stat_replication")
            .ok()
            .flatten()
            .as_deref()
            == Some("1")
    })
    .unwrap();
    for n in 0..30 {
        db.execute(&format!("INSERT INTO ticks (n) VALUES ({n})")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let loss = value(&src, "SELECT extract(epoch FROM clock_timestamp())");
    let data_dir = src.data_dir().to_path_buf();
    src.crash().unwrap();
    let _ = stream.kill();
    let _ = stream.wait();
    std::fs::remove_dir_all(&data_dir).unwrap();

    let (restored, _, rto) = restore_started(&env, "streamed", &[]);
    let count = value(&restored, "SELECT count(*) FROM ticks");
    let last = value(&restored, "SELECT extract(epoch FROM max(at)) FROM ticks");
    let rpo = loss.parse::<f64>().unwrap() - last.parse::<f64>().unwrap();
    eprintln!(
        "wal stream: {count} of 30 rows restored; RPO {rpo:.1} s (interval 0.5 s; 1.5 s idle before the loss), RTO {rto:.1} s"
    );
    assert_eq!(count, "30", "every row committed before the last upload is back");
    assert!(rpo < 5.0, "RPO {rpo} s");
}

/// Starts `wal stream` on the config `cfg` with `extra` options, output captured.
fn start_stream(env: &PgEnv, cfg: &str, extra: &[&str]) -> std::process::Child {
    let mut args = vec!["--config", cfg, "wal", "stream", "--interval", "300ms"];
    args.extend_from_slice(extra);
    env.cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `stream` streams from the server; on a timeout, fails with its output. Generous:
/// on a loaded machine a restart can take long enough for the back-off to reach 16 s.
fn wait_streaming(c: &ScratchCluster, stream: &mut std::process::Child, what: &str) {
    let r = c.wait_for(what, Duration::from_secs(60), || {
        c.client("postgres")
            .and_then(|db| db.query_value("SELECT count(*) FROM pg_stat_replication"))
            .ok()
            .flatten()
            .as_deref()
            == Some("1")
    });
    if let Err(e) = r {
        let _ = stream.kill();
        let o = stream.stderr.take().map(std::io::read_to_string);
        panic!("{e}; wal stream said: {o:?}");
    }
}

/// Sends `signal` (e.g. "TERM") to a process.
fn send_signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Waits (up to 20 s) for a process to end and returns its exit code and output.
fn finish(mut child: std::process::Child) -> Run {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    Run::from_output(&[std::ffi::OsStr::new("wal stream")], o)
}

/// PIDs of the running `name` processes whose parent is `parent`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid ...
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let mut fields = rest.split(' ');
            let state = fields.next()?;
            let ppid = fields.next()?.parse::<u32>().ok()?;
            (comm == name && ppid == parent && state != "Z").then_some(pid)
        })
        .collect()
}

/// True while a process exists (and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false)
}

/// Waits until the slot is not in use any more.
fn wait_slot_released(c: &ScratchCluster, what: &str) {
    c.wait_for(what, Duration::from_secs(5), || {
        value(
            c,
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'lifeboat'",
        ) == "f"
    })
    .unwrap();
}

#[test]
fn wal_stream_reconnects_after_a_server_restart() {
    let Some(env) = PgEnv::new() else { return };
    let mut src = env.cluster(true, None);
    let db = src.client("postgres").unwrap();
    db.execute("ALTER SYSTEM SET archive_timeout = 0; SELECT pg_reload_conf();")
        .unwrap();
    db.execute("CREATE TABLE ticks (n int);").unwrap();
    let cfg = env.config("db", &src.url("postgres"));
    let cfg = cfg.to_str().unwrap().to_string();
    env.lifeboat(&["--config", &cfg, "backup", "db"]).ok();

    let mut stream = start_stream(&env, &cfg, &["--duration", "120s"]);
    wait_streaming(&src, &mut stream, "the stream to start");
    db.execute("INSERT INTO ticks SELECT generate_series(1, 10)").unwrap();
    let t0 = Instant::now();
    src.stop().unwrap();
    src.start().unwrap();
    wait_streaming(&src, &mut stream, "the stream to reconnect");
    eprintln!(
        "wal stream reconnected {:.1} s after the restart began",
        t0.elapsed().as_secs_f64()
    );
    let db = src.client("postgres").unwrap();
    db.execute("INSERT INTO ticks SELECT generate_series(11, 20)").unwrap();
    // A crash (immediate stop, crash recovery on start) instead of a clean restart.
    src.crash().unwrap();
    src.start().unwrap();
    wait_streaming(&src, &mut stream, "the stream to reconnect after a crash");
    let db = src.client("postgres").unwrap();
    db.execute("INSERT INTO ticks SELECT generate_series(21, 30)").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    send_signal(stream.id(), "TERM");
    let run = finish(stream);
    run.ok();
    let lost: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("lost the connection"))
        .collect();
    assert!(!lost.is_empty(), "no reconnect line:\n{run}");
    assert!(lost.iter().all(|l| l.contains("retrying in")), "{run}");
    assert!(
        run.stdout.contains("reconnect(s)") && !run.stdout.contains("; 0 reconnect(s)"),
        "{run}"
    );
    eprintln!("{}", lost.join("\n"));

    let data_dir = src.data_dir().to_path_buf();
    src.crash().unwrap();
    std::fs::remove_dir_all(&data_dir).unwrap();
    let (restored, _, _) = restore_started(&env, "reconnected", &[]);
    assert_eq!(
        value(&restored, "SELECT count(*) FROM ticks"),
        "30",
        "rows committed after the restart and after the crash were streamed"
    );
}

#[test]
fn wal_stream_stops_on_signals_and_releases_the_slot() {
    let Some(env) = PgEnv::new() else { return };
    let src = env.cluster(false, None);
    let cfg = env.config("db", &src.url("postgres"));
    let cfg = cfg.to_str().unwrap().to_string();

    // SIGTERM (a service stop): exit 0 with the summary, pg_receivewal gone, slot free.
    let mut stream = start_stream(&env, &cfg, &["--json"]);
    wait_streaming(&src, &mut stream, "the stream to start");
    let receivers = children_named(stream.id(), "pg_receivewal");
    assert_eq!(receivers.len(), 1, "one pg_receivewal under lifeboat");
    send_signal(stream.id(), "TERM");
    let run = finish(stream);
    run.ok();
    assert_eq!(run.json()["reconnects"], 0, "{run}");
    assert!(!alive(receivers[0]), "pg_receivewal {} outlived lifeboat", receivers[0]);
    wait_slot_released(&src, "the slot to be released after SIGTERM");

    // The same slot again at once; Ctrl-C (SIGINT) stops it the same way.
    let mut stream = start_stream(&env, &cfg, &[]);
    wait_streaming(&src, &mut stream, "the second stream to start");
    send_signal(stream.id(), "INT");
    let run = finish(stream);
    run.ok();
    assert!(run.stdout.contains("stored"), "{run}");
    wait_slot_released(&src, "the slot to be released after SIGINT");

    // SIGKILL leaves no handler running: the kernel's parent-death signal ends pg_receivewal.
    let mut stream = start_stream(&env, &cfg, &[]);
    wait_streaming(&src, &mut stream, "the third stream to start");
    let receivers = children_named(stream.id(), "pg_receivewal");
    assert_eq!(receivers.len(), 1, "one pg_receivewal under lifeboat");
    stream.kill().unwrap();
    stream.wait().unwrap();
    src.wait_for("pg_receivewal to die with lifeboat", Duration::from_secs(5), || {
        !alive(receivers[0])
    })
    .unwrap();
    wait_slot_released(&src, "the slot to be released after SIGKILL");

    // A pg_receivewal that lifeboat did not start holds the slot: one line naming it, and it
    // is left running.
    let spool = env.root.join("other-receiver");
    std::fs::create_dir(&spool).unwrap();
    let mut other = env
        .tools
        .command("pg_receivewal")
        .unwrap()
        .arg("-D")
        .arg(&spool)
        .args(["--slot", "lifeboat", "--no-loop"])
        .arg(format!("--dbname={}", src.url("postgres")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_streaming(&src, &mut other, "the other pg_receivewal to start");
    let run = env.lifeboat(&["--quiet", "--config", &cfg, "wal", "stream", "--duration", "30s"]);
    run.expect_code(1).one_line_error(&[
        "in use by",
        &format!("pg_receivewal PID {} on this machine", other.id()),
    ]);
    eprintln!("{}", run.stderr.trim());
    assert!(alive(other.id()), "the other pg_receivewal was left alone");
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn wal_stream_rejects_a_zero_interval() {
    let env = crate::common::Env::new();
    let t0 = Instant::now();
    env.run(&["wal", "stream", "--interval", "0s", "--duration", "2s"])
        .expect_code(2)
        .one_line_error(&["--interval 0s", "too short"]);
    assert!(t0.elapsed() < Duration::from_secs(2), "rejected at once");
}

#[test]
fn forensic_copy_is_labelled_and_never_latest() {
    let Some(env) = PgEnv::new() else { return };
    let src = env.cluster(true, None);
    let cfg = env.root.join("forensic.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sources.db]\nkind = \"postgres\"\nurl = \"{}\"\nmode = \"physical\"\ndata_dir = \"{}\"\n",
            src.url("postgres"),
            src.data_dir().display()
        ),
    )
    .unwrap();
    env.give(&cfg);
    let r = env.lifeboat(&["--config", cfg.to_str().unwrap(), "--json", "backup", "db", "--force"]);
    r.ok();
    let j = r.json();
    assert_eq!(j["forensic"], true);
    assert_eq!(j["postgres"]["forensic"], true);
    let id = j["snapshot_id"].as_str().unwrap().to_string();
    let target = env.root.join("forensic-restore");
    env.lifeboat(&["restore", "db", "latest", "--data-dir", target.to_str().unwrap()])
        .expect_code(11);
    env.lifeboat(&["restore", "db", &id, "--data-dir", target.to_str().unwrap()])
        .ok();
    assert!(target.join("PG_VERSION").exists());
    assert!(target.join("global/pg_control").exists());
}

impl PgEnv {
    /// A physical source with restore-test checks.
    fn config_with_checks(&self, name: &str, url: &str, checks: &[&str]) -> PathBuf {
        let p = self.root.join(format!("{name}.toml"));
        let checks: Vec<String> = checks.iter().map(|c| format!("{c:?}")).collect();
        std::fs::write(
            &p,
            format!(
                "[sources.db]\nkind = \"postgres\"\nurl = \"{url}\"\nmode = \"physical\"\ndatabases = \"all\"\nchecks = [{}]\n",
                checks.join(", ")
            ),
        )
        .unwrap();
        self.give(&p);
        p
    }

    /// `lifeboat` with TMPDIR pointing at `tmp` (to see that throwaway clusters go away).
    fn lifeboat_tmp(&self, tmp: &Path, args: &[&str]) -> Run {
        let o = self.cmd(args).env("TMPDIR", tmp).output().unwrap();
        let a: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        Run::from_output(&a, o)
    }
}

/// Every database's table fingerprints as the restore-test attestation records them.
fn attested_fingerprints(report: &serde_json::Value) -> Vec<(String, Vec<lifeboat_pg::fingerprint::TableFingerprint>)> {
    report["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                serde_json::from_value(d["fingerprints"].clone()).unwrap_or_default(),
            )
        })
        .collect()
}

fn live_fingerprints(
    env: &PgEnv,
    c: &ScratchCluster,
    dbs: &[&str],
) -> Vec<(String, Vec<lifeboat_pg::fingerprint::TableFingerprint>)> {
    dbs.iter()
        .map(|d| {
            (
                d.to_string(),
                lifeboat_pg::fingerprint::compute(&env.tools, &c.conn(d), None).unwrap(),
            )
        })
        .collect()
}

#[test]
fn physical_restore_test_fingerprints_checks_and_amcheck() {
    let Some(env) = PgEnv::new() else { return };
    let src = env.cluster(true, None);
    assert!(env.pgbench(&src, &["-i", "-s", "1", "-q"]).wait().unwrap().success());
    let db = src.client("postgres").unwrap();
    db.execute("CREATE DATABASE other").unwrap();
    src.client("other")
        .unwrap()
        .execute("CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 500) g;")
        .unwrap();
    let cfg = env.config_with_checks(
        "checks",
        &src.url("postgres"),
        &[
            "SELECT count(*) = 100000 FROM pgbench_accounts",
            "SELECT count(*) > 0 FROM pgbench_branches",
        ],
    );
    let cfg = cfg.to_str().unwrap();
    let b = env.lifeboat(&["--config", cfg, "--json", "backup", "db"]);
    b.ok();
    let id = b.json()["snapshot_id"].as_str().unwrap().to_string();
    // Nothing changed since the backup: its restored state equals the live databases.
    let live = live_fingerprints(&env, &src, &["other", "postgres"]);

    let tmp = env.mkdir("tmp");
    let t0 = Instant::now();
    let v = env.lifeboat_tmp(&tmp, &["--config", cfg, "--json", "verify", "restore", "db"]);
    v.ok();
    let took = t0.elapsed().as_secs_f64();
    let j = v.json();
    let r = &j["report"];
    assert_eq!(j["passed"], true, "{j}");
    assert_eq!(
        attested_fingerprints(r),
        live,
        "restored fingerprints differ from the source's"
    );
    assert_eq!(r["checks"].as_array().unwrap().len(), 2, "{r}");
    assert!(
        r["checks"].as_array().unwrap().iter().all(|c| c["passed"] == true),
        "{r}"
    );
    assert_eq!(r["amcheck"]["passed"], true, "{r}");
    assert!(r["amcheck"]["options"].to_string().contains("--heapallindexed"), "{r}");
    assert!(r["restore_bytes"].as_u64().unwrap() > 10_000_000, "{r}");
    assert!(r["restore_secs"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["reference"].is_null(), "the first test records the reference: {r}");
    eprintln!(
        "physical restore test: restore + recovery {:.1} s ({} bytes), fingerprints {:.1} s, pg_amcheck --heapallindexed {:.1} s, whole command {took:.1} s",
        r["restore_secs"].as_f64().unwrap(),
        r["restore_bytes"],
        r["fingerprint_secs"].as_f64().unwrap(),
        r["amcheck"]["secs"].as_f64().unwrap()
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the throwaway cluster was not removed"
    );

    // `snapshots --verified` lists it; a second test compares with the first one's fingerprints.
    let s = env.lifeboat(&["--json", "snapshots", "--verified"]);
    s.ok();
    let listed = s.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["verified"], true);
    let again = env.lifeboat_tmp(&tmp, &["--config", cfg, "verify", "restore", "db", &id]);
    again.ok();
    assert!(
        again.stdout.contains("PASSED") && again.stdout.contains("fingerprints equal to the restore test of"),
        "{again:?}"
    );

    // A failing check: exit 18, recorded as failed, the snapshot is no clean candidate; the
    // throwaway cluster is gone all the same.
    db.execute("DELETE FROM pgbench_history").unwrap();
    env.lifeboat(&["--config", cfg, "backup", "db"]).ok();
    let bad = env.config_with_checks("bad", &src.url("postgres"), &["SELECT count(*) > 0 FROM no_such_table"]);
    let f = env.lifeboat_tmp(&tmp, &["--config", bad.to_str().unwrap(), "verify", "restore", "db"]);
    f.expect_code(18).one_line_error(&["restore test", "failed check"]);
    assert!(f.stdout.contains("FAIL"), "{f:?}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    let s = env.lifeboat(&["--json", "snapshots"]);
    let all = s.json();
    let verified: Vec<_> = all.as_array().unwrap().iter().map(|s| s["verified"].clone()).collect();
    assert_eq!(
        verified,
        vec![serde_json::json!(true), serde_json::json!(false)],
        "{all}"
    );
}

/// The server's clock as PostgreSQL writes times (microseconds, UTC).
fn server_now(c: &ScratchCluster) -> String {
    value(
        c,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')",
    )
}

#[test]
fn clean_before_restores_the_verified_backup_and_replays_to_just_before_the_incident() {
    let Some(env) = PgEnv::new() else { return };
    let src = env.cluster(true, None);
    let cfg = env.config("db", &src.url("postgres"));
    let cfg = cfg.to_str().unwrap();
    let db = src.client("postgres").unwrap();
    db.execute("CREATE TABLE marks (t text); INSERT INTO marks VALUES ('in the backup');")
        .unwrap();
    let b = env.lifeboat(&["--config", cfg, "--json", "backup", "db"]);
    b.ok();
    let clean_id = b.json()["snapshot_id"].as_str().unwrap().to_string();
    env.lifeboat(&["--config", cfg, "verify", "restore", "db"]).ok();
    let before_first_backup = "2001-01-01 00:00+00";

    // A good change after the backup, the incident, a bad change after it.
    db.execute("INSERT INTO marks VALUES ('good, before the incident');")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let incident = server_now(&src);
    std::thread::sleep(Duration::from_millis(1100));
    db.execute("INSERT INTO marks VALUES ('BAD, after the incident');")
        .unwrap();
    // A later backup, verified too, holds the bad change: --clean-before must not pick it.
    env.lifeboat(&["--config", cfg, "backup", "db"]).ok();
    env.lifeboat(&["--config", cfg, "verify", "restore", "db"]).ok();
    // An unverified backup before the incident would not be picked either (none here: the
    // verified one is the newest before it).
    wait_archived(&src);

    let cand = env.lifeboat(&[
        "--config",
        cfg,
        "--json",
        "snapshots",
        "--verified",
        "--before",
        &incident,
    ]);
    cand.ok();
    let cands = cand.json();
    assert_eq!(cands.as_array().unwrap().len(), 1, "{cands}");
    assert_eq!(cands[0]["id"], clean_id.as_str());

    let (restored, run, _) = restore_started(
        &env,
        "clean",
        &["--config", cfg, "--clean-before", &incident, "--no-archive"],
    );
    let r = run.json();
    assert_eq!(r["snapshot_id"], clean_id.as_str(), "{r}");
    assert!(
        r["recovery_settings"]
            .to_string()
            .contains("recovery_target_inclusive = 'off'"),
        "{r}"
    );
    let marks = restored
        .client("postgres")
        .unwrap()
        .query("SELECT t FROM marks ORDER BY t")
        .unwrap();
    assert_eq!(
        marks,
        vec![
            vec![Some("good, before the incident".to_string())],
            vec![Some("in the backup".to_string())]
        ],
        "clean restore to just before {incident}"
    );
    drop(restored);

    // Before any verified backup: nothing to restore, nothing written.
    let none = env.root.join("none");
    env.lifeboat(&[
        "--config",
        cfg,
        "restore",
        "db",
        "--clean-before",
        before_first_backup,
        "--data-dir",
        none.to_str().unwrap(),
    ])
    .expect_code(11)
    .one_line_error(&["restore test"]);
    assert!(!none.join("PG_VERSION").exists());
    // The recovery target comes from --clean-before alone.
    env.lifeboat(&[
        "--config",
        cfg,
        "restore",
        "db",
        "--clean-before",
        &incident,
        "--target-time",
        &incident,
        "--data-dir",
        none.to_str().unwrap(),
    ])
    .expect_code(2)
    .one_line_error(&["--clean-before"]);
}

#[test]
fn pgbench_during_logical_and_physical_backups_then_both_restores_equal_their_fingerprints() {
    let Some(env) = PgEnv::new() else { return };
    let src = env.cluster(true, None);
    assert!(env.pgbench(&src, &["-i", "-s", "2", "-q"]).wait().unwrap().success());
    // One server, both modes: `db` physical, `dbl` logical.
    let cfg = env.root.join("both.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sources.db]\nkind = \"postgres\"\nurl = \"{url}\"\nmode = \"physical\"\ndatabases = \"all\"\n\
             checks = [\"SELECT count(*) > 0 FROM pgbench_history\"]\n\n\
             [sources.dbl]\nkind = \"postgres\"\nurl = \"{url}\"\nmode = \"logical\"\ndatabases = [\"postgres\"]\n",
            url = src.url("postgres")
        ),
    )
    .unwrap();
    env.give(&cfg);
    let cfg = cfg.to_str().unwrap();

    let mut load = env.pgbench(&src, &["-n", "-T", "60", "-c", "2"]);
    std::thread::sleep(Duration::from_secs(1));
    let history = |c: &ScratchCluster| -> i64 { value(c, "SELECT count(*) FROM pgbench_history").parse().unwrap() };
    let h0 = history(&src);
    let logical = env.lifeboat(&["--config", cfg, "--json", "backup", "dbl"]);
    logical.ok();
    let physical = env.lifeboat(&["--config", cfg, "--json", "backup", "db"]);
    physical.ok();
    let h1 = history(&src);
    assert!(
        load.try_wait().unwrap().is_none(),
        "pgbench stopped before the backups finished"
    );
    let _ = load.kill();
    let _ = load.wait();
    assert!(h1 > h0, "no writes during the backups ({h0} -> {h1})");
    let physical_id = physical.json()["snapshot_id"].as_str().unwrap().to_string();
    wait_archived(&src);

    // Logical: restored into a new database, every table equal to the fingerprints taken in
    // the dump's snapshot; and its restore test passes.
    let r = env.lifeboat(&[
        "--config",
        cfg,
        "--json",
        "restore",
        "dbl",
        "--to",
        &src.url("restored"),
    ]);
    r.ok();
    let lj = r.json();
    assert_eq!(lj["fingerprint_mismatches"], serde_json::json!([]), "{lj}");
    assert!(lj["tables"].as_u64().unwrap() >= 4, "{lj}");
    env.lifeboat(&["--config", cfg, "verify", "restore", "dbl"]).ok();

    // Physical: the restore test records the fingerprints at the backup's end; a restore of
    // the same snapshot recovered to that point (--target-immediate) equals them table by table.
    let v = env.lifeboat(&["--config", cfg, "--json", "verify", "restore", "db", &physical_id]);
    v.ok();
    let attested = attested_fingerprints(&v.json()["report"]);
    assert!(
        attested.iter().any(|(d, t)| d == "postgres" && t.len() >= 4),
        "{attested:?}"
    );
    let (restored, run, _) = restore_started(
        &env,
        "immediate",
        &["--config", cfg, "--target-immediate", "--no-archive"],
    );
    assert_eq!(run.json()["snapshot_id"], physical_id.as_str());
    let names: Vec<&str> = attested.iter().map(|(d, _)| d.as_str()).collect();
    let restored_fp = live_fingerprints(&env, &restored, &names);
    assert_eq!(restored_fp, attested, "physical restore differs from its restore test");
    let rows: u64 = restored_fp.iter().flat_map(|(_, t)| t.iter().map(|t| t.rows)).sum();
    eprintln!(
        "under pgbench ({h0} -> {h1} transactions during the backups): logical restore {} tables equal to the backup's fingerprints; physical restore {} rows in {} databases equal to the restore test's",
        lj["tables"],
        rows,
        names.len()
    );
}

#[test]
fn physical_restore_test_without_its_wal_fails_is_recorded_and_cleans_up() {
    let Some(env) = PgEnv::new() else { return };
    let src = env.cluster(true, None);
    let cfg = env.config("db", &src.url("postgres"));
    let cfg = cfg.to_str().unwrap();
    let b = env.lifeboat(&["--config", cfg, "--json", "backup", "db"]);
    b.ok();
    let pg = b.json()["postgres"].clone();
    // The segments the backup needs to become consistent vanish from the repository.
    let ns = env.repo.join("named").join(pg["wal_namespace"].as_str().unwrap());
    let mut removed = 0;
    for seg in [pg["start_wal"].as_str().unwrap(), pg["stop_wal"].as_str().unwrap()] {
        removed += usize::from(std::fs::remove_file(ns.join(seg)).is_ok());
    }
    assert!(removed > 0, "no WAL manifest under {}", ns.display());
    let tmp = env.mkdir("tmp");
    let f = env.lifeboat_tmp(&tmp, &["--config", cfg, "verify", "restore", "db"]);
    f.expect_code(18)
        .one_line_error(&["restore test", "WAL missing", "could not locate required checkpoint"]);
    assert!(f.stdout.contains("FAILED"), "{f:?}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "throwaway cluster left behind"
    );
    let s = env.lifeboat(&["--json", "snapshots"]);
    assert_eq!(s.json()[0]["verified"], false, "{}", s.stdout);
    // None of its WAL in the repository at all (the server archived elsewhere): still a gap,
    // not "no archived WAL", exit 16.
    std::fs::remove_dir_all(&ns).unwrap();
    env.lifeboat(&["wal", "check", "--settle", "0"]).expect_code(16);
}

/// `physical_method = "local"`: lifeboat on the database host reads the data directory between
/// pg_backup_start and pg_backup_stop; the second backup reads only the files that changed.
#[test]
fn local_method_full_then_incremental_under_load_restores_equal_and_pitr() {
    let Some(env) = PgEnv::new() else { return };
    let src = env.cluster(true, None);
    assert!(env.pgbench(&src, &["-i", "-s", "1", "-q"]).wait().unwrap().success());
    let db = src.client("postgres").unwrap();
    // A large table the load never touches (what an incremental backup skips), and an unlogged
    // one (restored empty, like pg_basebackup leaves it).
    db.execute(
        "CREATE TABLE static AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 400000) g; \
         CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 1000) g; CHECKPOINT;",
    )
    .unwrap();
    // The static table's files must be older than the first backup's safety window.
    std::thread::sleep(physical_window());
    let cfg = env.local_config("local", &src, "SELECT count(*) = 400000 FROM static");
    let cfg = cfg.to_str().unwrap();

    let mut load = env.pgbench(&src, &["-n", "-T", "60", "-c", "2"]);
    std::thread::sleep(Duration::from_secs(1));
    let full = env.lifeboat(&["--config", cfg, "--json", "backup", "db"]);
    full.ok();
    let f = full.json();
    assert_eq!(f["postgres"]["method"], "local", "{f}");
    assert_eq!(f["postgres"]["backup_type"], "full", "{f}");
    assert_eq!(f["postgres"]["parent"], serde_json::Value::Null);
    assert_eq!(f["summary"]["files_unchanged"], 0);
    let full_read = f["summary"]["bytes_read"].as_u64().unwrap();
    let full_id = f["snapshot_id"].as_str().unwrap().to_string();

    // More load, then the incremental, still under load.
    std::thread::sleep(Duration::from_secs(3));
    let incr = env.lifeboat(&["--config", cfg, "--json", "backup", "db"]);
    incr.ok();
    let i = incr.json();
    let incr_id = i["snapshot_id"].as_str().unwrap().to_string();
    assert!(
        load.try_wait().unwrap().is_none(),
        "pgbench stopped before the backups finished"
    );
    let _ = load.kill();
    let _ = load.wait();
    let pg = &i["postgres"];
    assert_eq!(pg["backup_type"], "incremental", "{i}");
    assert_eq!(pg["parent"], full_id.as_str());
    let incr_read = i["summary"]["bytes_read"].as_u64().unwrap();
    assert!(pg["files_skipped"].as_u64().unwrap() > 100, "{i}");
    assert!(
        incr_read * 3 < full_read,
        "the incremental read {incr_read} bytes, the full {full_read}"
    );
    eprintln!(
        "local method: full read {full_read} bytes; incremental read {incr_read} bytes in {} files, skipped {} files ({} bytes)",
        pg["files_read"], pg["files_skipped"], pg["bytes_skipped"]
    );
    let list = env.lifeboat(&["snapshots"]);
    list.ok();
    assert!(list.stdout.contains("(local incremental:"), "{}", list.stdout);

    // Restore test of the incremental (recovery to its end, fingerprints, checks, amcheck), and
    // a restore of it to the same point equals those fingerprints.
    let v = env.lifeboat(&["--config", cfg, "--json", "verify", "restore", "db", &incr_id]);
    v.ok();
    let attested = attested_fingerprints(&v.json()["report"]);
    assert!(
        attested.iter().any(|(d, t)| d == "postgres" && t.len() >= 5),
        "{attested:?}"
    );
    let (restored, run, _) = restore_started(
        &env,
        "immediate",
        &["--config", cfg, "--target-immediate", "--no-archive"],
    );
    assert_eq!(run.json()["snapshot_id"], incr_id.as_str());
    let names: Vec<&str> = attested.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(live_fingerprints(&env, &restored, &names), attested);
    assert_eq!(value(&restored, "SELECT count(*) FROM scratch"), "0");
    assert_eq!(value(&restored, "SELECT count(*) FROM static"), "400000");
    drop(restored);

    // PITR from the incremental: quiet source, a moment between two transactions.
    db.execute("CREATE TABLE marks (t text); INSERT INTO marks VALUES ('first');")
        .unwrap();
    let history = value(&src, "SELECT count(*) FROM pgbench_history");
    let source_fp = live_fingerprints(&env, &src, &["postgres"]);
    wait_archived(&src);
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = server_now(&src);
    std::thread::sleep(Duration::from_millis(1100));
    db.execute("INSERT INTO marks VALUES ('second');").unwrap();
    wait_archived(&src);
    let (pitr, run, _) = restore_started(&env, "pitr", &["--config", cfg, "--target-time", &t1, "--no-archive"]);
    assert_eq!(run.json()["snapshot_id"], incr_id.as_str());
    let marks = pitr.client("postgres").unwrap().query("SELECT t FROM marks").unwrap();
    assert_eq!(marks, vec![vec![Some("first".to_string())]], "PITR to {t1}");
    assert_eq!(value(&pitr, "SELECT count(*) FROM pgbench_history"), history);
    // `scratch` is unlogged: empty after any restore, full at the source.
    let logged = |mut fp: Vec<(String, Vec<lifeboat_pg::fingerprint::TableFingerprint>)>| {
        fp[0].1.retain(|t| t.table != "scratch");
        fp
    };
    let pitr_fp = logged(live_fingerprints(&env, &pitr, &["postgres"]));
    let source_fp = logged(source_fp);
    assert_eq!(pitr_fp, source_fp, "PITR restore differs from the source at {t1}");
    drop(pitr);

    // --full reads everything again.
    let again = env.lifeboat(&["--config", cfg, "--json", "backup", "db", "--full"]);
    again.ok();
    let a = again.json();
    assert_eq!(a["postgres"]["backup_type"], "full", "{a}");
    assert_eq!(a["summary"]["files_unchanged"], 0, "{a}");
}

/// A little more than the local method's timestamp safety window.
fn physical_window() -> Duration {
    lifeboat_pg::physical_local::SAFETY_WINDOW + Duration::from_millis(200)
}

/// The local method's snapshot has the layout of a pg_basebackup one (same paths, types and
/// modes; pg_basebackup's backup_manifest aside), so restore and restore tests treat both alike;
/// a data directory it cannot read, or one of another cluster, is refused with a clear error.
#[test]
fn local_method_snapshot_has_the_layout_of_pg_basebackup() {
    let Some(env) = PgEnv::new() else { return };
    let src = env.cluster(true, None);
    let db = src.client("postgres").unwrap();
    db.execute(
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g; \
         CREATE UNLOGGED TABLE u AS SELECT g FROM generate_series(1, 10000) g; \
         CREATE INDEX ON u (g); CHECKPOINT;",
    )
    .unwrap();
    let write = |name: &str, method: &str, data_dir: &Path| -> String {
        let p = env.root.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "[sources.db]\nkind = \"postgres\"\nurl = \"{}\"\nmode = \"physical\"\nphysical_method = \"{method}\"\ndata_dir = \"{}\"\n",
                src.url("postgres"),
                data_dir.display()
            ),
        )
        .unwrap();
        env.give(&p);
        p.to_str().unwrap().to_string()
    };
    let layout = |id: &str| -> std::collections::BTreeMap<String, (String, u64)> {
        let r = env.lifeboat(&["--json", "ls", id]);
        r.ok();
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["path"].as_str().unwrap().to_string(),
                    (
                        e["type"].as_str().unwrap_or("").to_string(),
                        e["mode"].as_u64().unwrap() & 0o7777,
                    ),
                )
            })
            .filter(|(p, _)| p != "/backup_manifest")
            .collect()
    };
    let base_cfg = write("base", "basebackup", src.data_dir());
    let local_cfg = write("local", "local", src.data_dir());
    let b = env.lifeboat(&["--config", &base_cfg, "--json", "backup", "db"]);
    b.ok();
    assert_eq!(b.json()["postgres"]["method"], "basebackup");
    let l = env.lifeboat(&["--config", &local_cfg, "--json", "backup", "db"]);
    l.ok();
    assert_eq!(l.json()["postgres"]["method"], "local");
    let (base, local) = (
        layout(b.json()["snapshot_id"].as_str().unwrap()),
        layout(l.json()["snapshot_id"].as_str().unwrap()),
    );
    let only_base: Vec<_> = base.iter().filter(|(k, v)| local.get(*k) != Some(v)).collect();
    let only_local: Vec<_> = local.iter().filter(|(k, v)| base.get(*k) != Some(v)).collect();
    assert!(
        only_base.is_empty() && only_local.is_empty(),
        "only in pg_basebackup's: {only_base:?}\nonly in the local method's: {only_local:?}"
    );
    assert!(local.contains_key("/backup_label") && local.contains_key("/pg_wal/archive_status"));
    assert!(!local.keys().any(|k| k.starts_with("/pg_wal/0")));
    eprintln!("pg_basebackup and the local method: the same {} entries", local.len());

    // A file the backup cannot read: nothing is committed and the server's backup is ended
    // (the next backup starts one again).
    use std::os::unix::fs::PermissionsExt;
    let snapshots = || env.lifeboat(&["--json", "snapshots"]).json().as_array().unwrap().len();
    let before = snapshots();
    let junk = src.data_dir().join("unreadable-junk");
    std::fs::write(&junk, b"x").unwrap();
    env.give(&junk);
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o000)).unwrap();
    if env.run_as.is_some() {
        env.lifeboat(&["--config", &local_cfg, "backup", "db"])
            .expect_code(2)
            .one_line_error(&["unreadable", "nothing was committed"]);
        assert_eq!(snapshots(), before);
    }
    std::fs::remove_file(&junk).unwrap();
    let again = env.lifeboat(&["--config", &local_cfg, "--json", "backup", "db"]);
    again.ok();
    assert_eq!(again.json()["postgres"]["backup_type"], "incremental");

    // The pg_basebackup method cannot stream a tablespace outside the data directory: refused,
    // naming it and the method that can (see local_method_backs_up_tablespaces…).
    let ts = env.mkdir("ts-outside");
    db.execute(&format!("CREATE TABLESPACE elsewhere LOCATION '{}'", ts.display()))
        .unwrap();
    env.lifeboat(&["--config", &base_cfg, "backup", "db"])
        .expect_code(14)
        .one_line_error(&["tablespace elsewhere", "physical_method = \"local\""]);
    db.execute("DROP TABLESPACE elsewhere").unwrap();

    // A REPLICATION-only role may run pg_basebackup but not pg_backup_start: "auto" falls back
    // to pg_basebackup with a note, "local" refuses with the GRANT to run (exit 14).
    db.execute("CREATE ROLE repl LOGIN REPLICATION").unwrap();
    let url = src.url("postgres").replacen(
        &format!(
            "//{}@",
            src.url("postgres")
                .split("//")
                .nth(1)
                .unwrap()
                .split('@')
                .next()
                .unwrap()
        ),
        "//repl@",
        1,
    );
    for (name, method) in [("repl-auto", "auto"), ("repl-local", "local")] {
        let p = env.root.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "[sources.db]\nkind = \"postgres\"\nurl = \"{url}\"\nmode = \"physical\"\nphysical_method = \"{method}\"\ndata_dir = \"{}\"\n",
                src.data_dir().display()
            ),
        )
        .unwrap();
        env.give(&p);
        let r = env.lifeboat(&["--config", p.to_str().unwrap(), "--json", "backup", "db"]);
        if method == "auto" {
            r.ok();
            assert_eq!(r.json()["postgres"]["method"], "basebackup", "{r}");
            assert!(r.stderr.contains("GRANT EXECUTE ON FUNCTION pg_backup_start"), "{r}");
        } else {
            r.expect_code(14)
                .one_line_error(&["GRANT EXECUTE ON FUNCTION pg_backup_start"]);
        }
    }

    // A data directory of another cluster is refused before anything starts.
    let other = ScratchCluster::create(&env.tools, &ClusterOptions::default()).unwrap();
    let wrong = write("wrong", "local", other.data_dir());
    env.lifeboat(&["--config", &wrong, "backup", "db"])
        .expect_code(2)
        .one_line_error(&["system identifier", "data_dir"]);
    // physical_method = "local" without data_dir is a config error.
    let p = env.root.join("nodir.toml");
    std::fs::write(
        &p,
        format!(
            "[sources.db]\nkind = \"postgres\"\nurl = \"{}\"\nmode = \"physical\"\nphysical_method = \"local\"\n",
            src.url("postgres")
        ),
    )
    .unwrap();
    env.give(&p);
    env.lifeboat(&["--config", p.to_str().unwrap(), "backup", "db"])
        .one_line_error(&["physical_method", "data_dir"]);
}

/// Tablespaces outside the data directory: the local method follows their links, the restore
/// test puts them into its scratch folder, a restore refuses the live location and puts them
/// where `--tablespace-map` says, and WAL replayed after the backup lands there too.
#[test]
fn local_method_backs_up_tablespaces_and_restores_them_where_told() {
    let Some(env) = PgEnv::new() else { return };
    let src = env.cluster(true, None);
    let live_ts = env.mkdir("ts-live");
    let db = src.client("postgres").unwrap();
    db.execute(&format!("CREATE TABLESPACE fast LOCATION '{}'", live_ts.display()))
        .unwrap();
    db.execute(
        "CREATE TABLE hot (id int, v text) TABLESPACE fast; \
         INSERT INTO hot SELECT g, md5(g::text) FROM generate_series(1, 50000) g; \
         CREATE DATABASE appdb TABLESPACE fast;",
    )
    .unwrap();
    src.client("appdb")
        .unwrap()
        .execute("CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 1234) g;")
        .unwrap();
    db.execute("CHECKPOINT").unwrap();
    let cfg = env.local_config("ts", &src, "SELECT count(*) = 50000 FROM hot");
    let cfg = cfg.to_str().unwrap();

    let b = env.lifeboat(&["--config", cfg, "--json", "backup", "db"]);
    b.ok();
    let j = b.json();
    let spaces = &j["postgres"]["tablespaces"];
    assert_eq!(spaces.as_array().map(Vec::len), Some(1), "{j}");
    assert_eq!(spaces[0]["name"], "fast");
    assert_eq!(spaces[0]["location"], live_ts.to_str().unwrap());
    let id = j["snapshot_id"].as_str().unwrap().to_string();

    // The restore test restores the tablespace into its scratch folder, never the live one.
    let live_files = || {
        let mut v = Vec::new();
        for e in walk(&live_ts) {
            let m = std::fs::metadata(&e).unwrap();
            v.push((e, m.len()));
        }
        v.sort();
        v
    };
    let before = live_files();
    let v = env.lifeboat(&["--config", cfg, "--json", "verify", "restore", "db", &id]);
    v.ok();
    let report = &v.json()["report"];
    assert_eq!(report["passed"], true, "{report}");
    let attested = attested_fingerprints(report);
    assert!(attested.iter().any(|(d, _)| d == "appdb"), "{attested:?}");
    assert!(before.len() > 3, "{before:?}");

    // Written after the backup: replayed from WAL into the restored tablespace.
    db.execute("INSERT INTO hot SELECT g, 'late' FROM generate_series(50001, 50100) g")
        .unwrap();
    wait_archived(&src);

    // The default target is the tablespace's original location: not empty here, so refused
    // before anything is written.
    let refused_dir = env.root.join("refused");
    env.lifeboat(&[
        "--config",
        cfg,
        "restore",
        "db",
        "latest",
        "--data-dir",
        refused_dir.to_str().unwrap(),
    ])
    .expect_code(8)
    .one_line_error(&["tablespace fast", "already holds", "--tablespace-map fast=DIR"]);
    assert!(!refused_dir.exists());
    // A refused restore leaves no copy of the passphrase (nor a spool) behind.
    assert!(!env.root.join(".lifeboat-refused.passphrase").exists());
    assert!(!env.root.join(".lifeboat-refused.spool").exists());
    // --force-overwrite does not make the live tablespace fair game: the data directory being
    // replaced (none here) must link to it.
    env.lifeboat(&[
        "--config",
        cfg,
        "restore",
        "db",
        "latest",
        "--data-dir",
        refused_dir.to_str().unwrap(),
        "--force-overwrite",
    ])
    .expect_code(8)
    .one_line_error(&["tablespace fast", "does not link to it"]);
    assert!(!refused_dir.exists());
    let names = |v: Vec<(PathBuf, u64)>| v.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
    assert_eq!(
        names(live_files()),
        names(before.clone()),
        "the live tablespace is untouched"
    );
    env.lifeboat(&[
        "--config",
        cfg,
        "restore",
        "db",
        "latest",
        "--data-dir",
        refused_dir.to_str().unwrap(),
        "--tablespace-map",
        "nope=/tmp/x",
    ])
    .one_line_error(&["no tablespace nope", "fast (oid"]);

    let moved = env.mkdir("ts-restored");
    let map = format!("fast={}", moved.display());
    let (restored, run, _) = restore_started(
        &env,
        "with-ts",
        &["--config", cfg, "--tablespace-map", &map, "--no-archive"],
    );
    let r = run.json();
    assert_eq!(r["tablespaces"][0]["location"], moved.to_str().unwrap(), "{r}");
    assert_eq!(value(&restored, "SELECT count(*) FROM hot"), "50100");
    assert_eq!(
        value(
            &restored,
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'fast'"
        ),
        moved.to_str().unwrap()
    );
    let orders = restored
        .client("appdb")
        .unwrap()
        .query_value("SELECT count(*) FROM orders")
        .unwrap();
    assert_eq!(orders.as_deref(), Some("1234"));
    assert!(
        std::fs::symlink_metadata(
            restored
                .data_dir()
                .join("pg_tblspc")
                .join(spaces[0]["oid"].as_str().unwrap())
        )
        .unwrap()
        .file_type()
        .is_symlink()
    );
    // The restored server writes into its own copy; the live tablespace is the source's alone.
    restored
        .client("postgres")
        .unwrap()
        .execute("INSERT INTO hot VALUES (-1, 'restored copy'); CHECKPOINT;")
        .unwrap();
    // Restoring over that (stopped) copy with --force-overwrite: its data directory links the
    // tablespace to `moved`, so the PG_15_… folder there is moved aside, not deleted.
    let mut restored = restored;
    restored.stop().unwrap();
    let again = env.lifeboat(&[
        "--config",
        cfg,
        "--json",
        "restore",
        "db",
        "latest",
        "--data-dir",
        restored.data_dir().to_str().unwrap(),
        "--tablespace-map",
        &map,
        "--force-overwrite",
        "--no-archive",
    ]);
    again.ok();
    let aside = again.json()["tablespaces"][0]["moved_aside"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(aside.contains("lifeboat-old-"), "{again}");
    assert!(Path::new(&aside).is_dir());
    assert!(again.json()["moved_aside"].as_str().is_some(), "{again}");
    let version_dirs: Vec<String> = std::fs::read_dir(&moved)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("PG_15_"))
        .collect();
    assert_eq!(version_dirs.len(), 1, "{version_dirs:?}");
    drop(restored);
    assert_eq!(value(&src, "SELECT count(*) FROM hot WHERE id = -1"), "0");
    let after: Vec<_> = live_files()
        .into_iter()
        .filter(|(p, _)| before.iter().any(|(q, _)| q == p))
        .collect();
    assert_eq!(after.len(), before.len(), "live tablespace files vanished");

    // The next backup skips the tablespace's unchanged files too.
    let again = env.lifeboat(&["--config", cfg, "--json", "backup", "db"]);
    again.ok();
    let a = again.json();
    assert_eq!(a["postgres"]["backup_type"], "incremental", "{a}");
    assert!(a["postgres"]["files_skipped"].as_u64().unwrap() > 100, "{a}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The server archives into one repository, the backup is taken into another: PostgreSQL says
/// the WAL is archived, yet none of it is where the backup is. Refused (exit 14) with nothing
/// committed, instead of a snapshot no restore can make consistent.
#[test]
fn a_backup_into_a_repository_without_the_servers_wal_is_refused() {
    let Some(env) = PgEnv::new() else { return };
    let Some(elsewhere) = PgEnv::new() else { return };
    let src = env.cluster(true, None);
    let cfg = elsewhere.config("db", &src.url("postgres"));
    let cfg = cfg.to_str().unwrap();
    let started = Instant::now();
    elsewhere
        .lifeboat(&["--config", cfg, "backup", "db"])
        .expect_code(14)
        .one_line_error(&["not into this repository", "wal stream", "nothing was committed"]);
    assert!(started.elapsed() < Duration::from_secs(90));
    assert_eq!(
        elsewhere
            .lifeboat(&["--json", "snapshots"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Into the repository the server archives to, the same backup succeeds.
    let cfg = env.config("db", &src.url("postgres"));
    env.lifeboat(&["--config", cfg.to_str().unwrap(), "backup", "db"]).ok();
}
