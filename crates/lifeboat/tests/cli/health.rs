//! `lifeboat health` and `lifeboat config validate` end to end: exit codes by the worst level,
//! suppression, JSON, timeouts, bad config, the `backup` kind against a real repository, and
//! `--watch`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Env, Run};

fn write_config(env: &Env, text: &str) -> PathBuf {
    let p = env.path("lifeboat.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn health(env: &Env, cfg: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), cfg.as_os_str()];
    let json = extra.contains(&"--json");
    if json {
        args.push("--json".as_ref());
    }
    args.push("health".as_ref());
    args.extend(
        extra
            .iter()
            .filter(|a| **a != "--json")
            .map(|a| std::ffi::OsStr::new(*a)),
    );
    env.run(&args)
}

fn command_check(name: &str, script: &str, extra: &str) -> String {
    format!("[[checks]]\nname = \"{name}\"\nkind = \"command\"\ncommand = {script:?}\n{extra}\n")
}

#[test]
fn exit_code_is_the_worst_level() {
    let env = Env::new();
    let ok = command_check("ok", "true", "");
    let cases = [
        (ok.clone(), 0, "HEALTHY: all 1 check pass"),
        (
            command_check("h", "exit 1", "levels = { down = \"high\" }"),
            20,
            "HIGH: 1 of 1 check failing (h high)",
        ),
        (
            command_check("u", "exit 1", "levels = { down = \"urgent\" }"),
            21,
            "URGENT:",
        ),
        (command_check("c", "exit 1", ""), 22, "CRITICAL:"),
        (
            [
                command_check("c", "exit 1", ""),
                command_check("h", "exit 1", "levels = { down = \"high\" }"),
                ok.clone(),
            ]
            .concat(),
            22,
            "CRITICAL: 2 of 3 checks failing (c critical, h high)",
        ),
        // A failing dependency suppresses the critical dependent: only "high" counts.
        (
            [
                command_check("db", "exit 1", "levels = { down = \"high\" }"),
                command_check("api", "exit 1", "depends_on = [\"db\"]"),
            ]
            .concat(),
            20,
            "HIGH: 1 of 2 checks failing (db high); 1 suppressed",
        ),
    ];
    for (text, code, verdict) in cases {
        let cfg = write_config(&env, &text);
        let r = health(&env, &cfg, &[]);
        r.expect_code(code);
        assert!(r.stdout.contains(verdict), "{text}\n{r}");
        assert!(r.stdout.starts_with("Check"), "{r}");
        let j = health(&env, &cfg, &["--json"]);
        j.expect_code(code);
        let v = j.json();
        assert_eq!(v["schema_version"], 1);
        assert!(v["verdict"].as_str().unwrap().contains(verdict));
    }
}

#[test]
fn json_report_shape() {
    let env = Env::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = write_config(
        &env,
        &format!(
            "[[checks]]\nname = \"port\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\
             [[checks]]\nname = \"disk\"\nkind = \"disk\"\npath = \"/\"\nmin_free = \"0%\"\n\
             {}",
            command_check("script", "echo all good", "")
        ),
    );
    let r = health(&env, &cfg, &["--json"]);
    r.ok();
    let v = r.json();
    for key in [
        "schema_version",
        "started_at",
        "duration_ms",
        "status",
        "worst_level",
        "verdict",
        "counts",
        "checks",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["counts"]["ok"], 3);
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["port", "disk", "script"]);
    assert_eq!(v["checks"][2]["detail"], "exit status 0: all good");
    drop(listener);
    // --only picks checks; an unknown name is a usage error.
    let r = health(&env, &cfg, &["--json", "--only", "script", "disk"]);
    r.ok();
    assert_eq!(r.json()["counts"]["total"], 2);
    health(&env, &cfg, &["--only", "nope"])
        .expect_code(2)
        .one_line_error(&["--only", "nope", "port, disk, script"]);
}

#[test]
fn global_timeout_bounds_the_run() {
    let env = Env::new();
    let cfg = write_config(
        &env,
        &[
            command_check("slow1", "sleep 30", "timeout = \"60s\""),
            command_check("slow2", "sleep 30", "timeout = \"60s\""),
        ]
        .concat(),
    );
    let t0 = Instant::now();
    let r = health(&env, &cfg, &["--timeout", "700ms"]);
    let took = t0.elapsed();
    r.expect_code(22);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(r.stdout.contains("stopped by the global timeout (700ms)"), "{r}");
    health(&env, &cfg, &["--timeout", "soon"])
        .expect_code(2)
        .one_line_error(&["invalid duration"]);
}

#[track_caller]
fn bad_config(text: &str, needles: &[&str]) {
    let env = Env::new();
    let cfg = write_config(&env, text);
    let mut with_file = vec!["lifeboat.toml"];
    with_file.extend_from_slice(needles);
    lb(&env, &cfg, &["config", "validate"])
        .expect_code(2)
        .one_line_error(&with_file);
    health(&env, &cfg, &[]).expect_code(2).one_line_error(&with_file);
}

/// Runs `lifeboat --config CFG ARGS…` with extra environment variables.
fn lb_env(env: &Env, cfg: &Path, args: &[&str], vars: &[(&str, &std::ffi::OsStr)]) -> Run {
    let mut v: Vec<std::ffi::OsString> = vec!["--config".into(), cfg.into()];
    v.extend(args.iter().map(std::ffi::OsString::from));
    env.run_env(&v, vars)
}

fn lb(env: &Env, cfg: &Path, args: &[&str]) -> Run {
    lb_env(env, cfg, args, &[])
}

#[test]
fn bad_checks_are_clear_errors() {
    bad_config(
        "[[checks]]\nname = \"a\"\nkind = \"smtp\"\n",
        &["line 3", "unknown kind \"smtp\""],
    );
    bad_config(
        "[[checks]]\nname = \"a\"\nkind = \"http\"\n\nurl = \"http//x\"\n",
        &["line 5", "malformed url"],
    );
    bad_config(
        "[[checks]]\nname = \"a\"\nkind = \"memory\"\n[[checks]]\nname = \"a\"\nkind = \"disk\"\npath = \"/\"\n",
        &["duplicate check name \"a\""],
    );
    bad_config(
        "[[checks]]\nname = \"a\"\nkind = \"memory\"\ndepends_on = [\"b\"]\n[[checks]]\nname = \"b\"\nkind = \"memory\"\ndepends_on = [\"a\"]\n",
        &["dependency cycle a -> b -> a"],
    );
    bad_config(
        "[[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"x:1\"\nurl = \"http://x\"\n",
        &["line 5", "unknown key \"url\" for kind \"tcp\""],
    );
    bad_config(
        "[[checks]]\nname = \"a\"\nkind = \"postgres\"\nurl = \"postgres://u:hunter2@h:x/db\"\n",
        &["malformed connection string", "u:***@"],
    );
}

#[test]
fn secrets_stay_out_of_errors() {
    let env = Env::new();
    let cfg = write_config(
        &env,
        "[[checks]]\nname = \"a\"\nkind = \"postgres\"\nurl = \"postgres://u:hunter2@h:x/db\"\n",
    );
    let r = health(&env, &cfg, &[]);
    r.expect_code(2);
    assert!(!r.stderr.contains("hunter2") && !r.stdout.contains("hunter2"), "{r}");
}

#[test]
fn validate_reports_what_it_found() {
    let env = Env::new();
    let cfg = write_config(
        &env,
        "[[checks]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"db.internal:5432\"\n\
         [[checks]]\nname = \"api\"\nkind = \"http\"\nurl = \"https://api.example.com/health?key=s3cret\"\ndepends_on = [\"db\"]\n",
    );
    let r = lb(&env, &cfg, &["config", "validate"]);
    r.ok();
    assert!(
        r.stdout
            .contains("valid (0 files source(s), 0 database source(s), 2 check(s))"),
        "{r}"
    );
    assert!(
        r.stdout.contains("(depends on db)") && !r.stdout.contains("s3cret"),
        "{r}"
    );
    let j = lb(&env, &cfg, &["--json", "config", "validate"]);
    j.ok();
    assert_eq!(j.json()["checks"][1]["depends_on"][0], "db");
    // The shipped example validates.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lifeboat.toml");
    lb(&env, &example, &["config", "validate"]).ok();
    // No config at all.
    env.run(&["config", "validate"])
        .expect_code(2)
        .one_line_error(&["no config file"]);
    env.run(&["health"])
        .expect_code(2)
        .one_line_error(&["no checks configured"]);
}

#[test]
fn backup_age_from_a_real_repository() {
    let env = Env::with_repo(&[]);
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), b"x").unwrap();
    let text = |rpo: &str| {
        format!(
            "[sources.data]\npaths = [\"{}\"]\n\n[[checks]]\nname = \"bk\"\nkind = \"backup\"\nsource = \"data\"\nrpo = \"{rpo}\"\n",
            data.display()
        )
    };
    let cfg = write_config(&env, &text("1h"));
    let r = health(&env, &cfg, &[]);
    r.expect_code(20);
    assert!(r.stdout.contains("no snapshot of source \"data\" yet"), "{r}");
    lb(&env, &cfg, &["backup", "data"]).ok();
    let r = health(&env, &cfg, &[]);
    r.ok();
    assert!(r.stdout.contains("newest snapshot of source \"data\" is"), "{r}");
    std::thread::sleep(Duration::from_millis(1100));
    let cfg = write_config(&env, &text("1s"));
    let r = health(&env, &cfg, &[]);
    r.expect_code(20);
    assert!(r.stdout.contains("older than the RPO of 1.00s"), "{r}");
    // No repository at the location: the check says so (high), nothing is created.
    let missing = env.path("no-repo");
    let r = lb_env(&env, &cfg, &["health"], &[("LIFEBOAT_REPO", missing.as_os_str())]);
    r.expect_code(20);
    assert!(
        r.stdout.contains("no lifeboat repository at") && r.stdout.contains("no-repo"),
        "{r}"
    );
    assert!(!missing.exists());
}

/// A running `lifeboat … health --watch`, its output lines arriving on a channel.
struct Watching {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watching {
    fn start(env: &Env, cfg: &Path, json: bool) -> Watching {
        let mut c = env.command();
        c.arg("--config").arg(cfg);
        if json {
            c.arg("--json");
        }
        let mut child = c
            .args(["health", "--watch", "200ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Watching {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 30 s: the machine may be loaded) for a line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?}; output so far:\n{}", self.seen.join("\n"));
    }

    /// Stops it; returns everything it printed.
    fn stop(mut self) -> Vec<String> {
        // Let a few more runs happen: a steady state must print nothing.
        std::thread::sleep(Duration::from_millis(700));
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.seen.extend(self.lines.try_iter());
        self.seen
    }
}

#[test]
fn watch_prints_only_changes() {
    let env = Env::new();
    let flag = env.path("flag");
    let cfg = write_config(
        &env,
        &[
            command_check("flag", &format!("test -e {}", flag.display()), ""),
            command_check("steady", "true", ""),
        ]
        .concat(),
    );
    let mut w = Watching::start(&env, &cfg, false);
    w.wait_for("CRITICAL: 1 of 2 checks failing (flag critical)");
    std::fs::write(&flag, b"").unwrap();
    w.wait_for("flag: fail (critical) -> ok: exit status 0");
    w.wait_for("HEALTHY: all 2 checks pass");
    let out = w.stop().join("\n");
    // The first run prints the table; later runs print only the change.
    assert_eq!(out.matches("Check  ").count(), 1, "{out}");
    assert_eq!(out.matches("HEALTHY").count(), 1, "{out}");
    assert!(!out.contains("steady:"), "steady check reported as a change:\n{out}");

    // --json: one line per run that changed something; the first lists every check.
    std::fs::remove_file(&flag).unwrap();
    let mut w = Watching::start(&env, &cfg, true);
    w.wait_for("\"status\":\"critical\"");
    std::fs::write(&flag, b"").unwrap();
    w.wait_for("\"status\":\"healthy\"");
    let lines: Vec<serde_json::Value> = w.stop().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["changes"].as_array().unwrap().len(), 2);
    assert_eq!(lines[1]["changes"][0]["name"], "flag");
    assert_eq!(lines[1]["changes"][0]["from_status"], "fail");
    assert_eq!(lines[1]["changes"][0]["now"]["status"], "ok");
    assert_eq!(lines[1]["schema_version"], 1);
}

#[path = "../../../lifeboat-health/tests/health/pg.rs"]
mod pg;

#[test]
fn postgres_password_from_the_environment_then_stopped() {
    let env = Env::new();
    let mut db = pg::Pg::start();
    let cfg = write_config(
        &env,
        &format!(
            "[[checks]]\nname = \"db\"\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:{}/postgres\"\n\
             [[checks]]\nname = \"api\"\nkind = \"command\"\ncommand = \"exit 1\"\ndepends_on = [\"db\"]\n",
            db.port
        ),
    );
    let home = env.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |vars: &[(&str, &std::ffi::OsStr)]| {
        let mut c = env.command();
        c.env_remove("PGPASSWORD").env_remove("PGPASSFILE").env("HOME", &home);
        c.args([std::ffi::OsStr::new("--config"), cfg.as_os_str(), "health".as_ref()]);
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let r = Run::from_output(&[], out);
        assert!(
            !r.stdout.contains(pg::PG_PASSWORD) && !r.stderr.contains(pg::PG_PASSWORD),
            "{r}"
        );
        r
    };
    // No password anywhere: the database check fails; api (behind it) is critical on its own.
    let r = run(&[]);
    r.expect_code(22);
    assert!(r.stdout.contains("database unavailable"), "{r}");
    // PGPASSWORD: db passes, api fails on its own (critical).
    let r = run(&[("PGPASSWORD", pg::PG_PASSWORD.as_ref())]);
    r.expect_code(22);
    assert!(
        r.stdout.contains("CRITICAL: 1 of 2 checks failing (api critical)"),
        "{r}"
    );
    // A private pgpass file works too; the same file readable by others is ignored, as by libpq.
    let pass = env.path("pgpass");
    std::fs::write(
        &pass,
        format!("127.0.0.1:{}:postgres:postgres:{}\n", db.port, pg::PG_PASSWORD),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = run(&[("PGPASSFILE", pass.as_os_str())]);
    assert!(r.stdout.contains("query ok"), "{r}");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run(&[("PGPASSFILE", pass.as_os_str())]);
    assert!(r.stdout.contains("database unavailable"), "{r}");
    // Stopped: the database is down (critical) and api's failure is suppressed behind it.
    db.stop();
    let r = run(&[("PGPASSWORD", pg::PG_PASSWORD.as_ref())]);
    r.expect_code(22);
    assert!(
        r.stdout
            .contains("CRITICAL: 1 of 2 checks failing (db critical); 1 suppressed"),
        "{r}"
    );
}

#[test]
fn textfile_for_prometheus() {
    let env = Env::new();
    let cfg = write_config(
        &env,
        &[
            command_check("ok", "true", ""),
            command_check("bad", "exit 1", "levels = { down = \"urgent\" }"),
        ]
        .concat(),
    );
    let prom = env.path("lifeboat.prom");
    let r = lb(&env, &cfg, &["health", "--textfile", prom.to_str().unwrap()]);
    r.expect_code(21);
    let text = std::fs::read_to_string(&prom).unwrap();
    for line in [
        "lifeboat_check_up{check=\"ok\",kind=\"command\"} 1",
        "lifeboat_check_up{check=\"bad\",kind=\"command\"} 0",
        "lifeboat_check_alert_level{check=\"bad\",kind=\"command\"} 2",
        "lifeboat_health_alert_level 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}:\n{text}");
    }
    // Only the final file is left behind (written under a temporary name, then renamed).
    let names: Vec<_> = std::fs::read_dir(env.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.to_string_lossy().starts_with(".tmp")).count(),
        0,
        "{names:?}"
    );
    lb(&env, &cfg, &["health", "--textfile", "/no/such/dir/x.prom"])
        .expect_code(1)
        .one_line_error(&["--textfile", "/no/such/dir/x.prom"]);
}

#[test]
fn command_checks_do_not_see_the_passphrase() {
    let env = Env::new();
    let cfg = write_config(
        &env,
        &command_check("env", "test -z \"$LIFEBOAT_PASSWORD\" || { echo leaked; exit 1; }", ""),
    );
    lb(&env, &cfg, &["health"]).ok();
}
