//! Logical PostgreSQL backups end to end through the binary, against real throwaway clusters:
//! backup, restore test (attested, shown by `snapshots`), clean restore before an incident,
//! refusal to overwrite, forensic backups, and bad input.

use std::ffi::OsStr;

use lifeboat_pg::{ClusterOptions, ScratchCluster, Tools};

use crate::common::{Env, PASSWORD, Run};

const DBPASS: &str = "s3cret-db-pw";

fn cluster() -> Option<(Tools, ScratchCluster)> {
    let tools = match Tools::find() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipped: {e}");
            return None;
        }
    };
    let opts = ClusterOptions {
        password: Some(DBPASS.into()),
        ..Default::default()
    };
    let mut c = ScratchCluster::create(&tools, &opts).unwrap();
    c.start().unwrap();
    c.client("postgres").unwrap().execute("CREATE DATABASE app;").unwrap();
    c.client("app")
        .unwrap()
        .execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, item text, created_at timestamptz DEFAULT now());
             INSERT INTO orders (item) SELECT 'item ' || g FROM generate_series(1, 500) g;",
        )
        .unwrap();
    Some((tools, c))
}

fn config(env: &Env, c: &ScratchCluster, checks: &[&str], extra: &str) -> std::path::PathBuf {
    config_for(env, c, "app", checks, extra)
}

/// A config whose source `db` backs up database `db_name` of the cluster.
fn config_for(env: &Env, c: &ScratchCluster, db_name: &str, checks: &[&str], extra: &str) -> std::path::PathBuf {
    let checks: Vec<String> = checks.iter().map(|c| format!("{c:?}")).collect();
    let text = format!(
        "[sources.db]\nkind = \"postgres\"\nmode = \"logical\"\nurl = \"{}\"\ndatabases = [\"{db_name}\"]\nchecks = [{}]\n{extra}",
        c.url(db_name),
        checks.join(", ")
    );
    let p = env.path(&format!("lifeboat-{}.toml", rand_suffix()));
    std::fs::write(&p, text).unwrap();
    p
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn run(env: &Env, cfg: &std::path::Path, args: &[&str]) -> Run {
    let mut a: Vec<&OsStr> = vec![OsStr::new("--config"), cfg.as_os_str()];
    a.extend(args.iter().map(OsStr::new));
    env.run_env(&a, &[("PGPASSWORD", OsStr::new(DBPASS))])
}

fn count(c: &ScratchCluster, db: &str, sql: &str) -> i64 {
    c.client(db)
        .unwrap()
        .query_value(sql)
        .unwrap()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn backup_verify_clean_restore_and_overwrite() {
    let Some((_tools, c)) = cluster() else { return };
    let env = Env::with_repo(&[]);
    let cfg = config(&env, &c, &["SELECT count(*) > 0 FROM orders"], "");

    let first = run(&env, &cfg, &["--json", "backup", "db"]);
    first.ok();
    let first_id = first.json()["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(first.json()["postgres"]["databases"][0]["tables"][0]["rows"], 500);
    let v = run(&env, &cfg, &["verify", "restore", "db"]);
    v.ok();
    assert!(
        v.stdout.contains("PASSED") && v.stdout.contains("fingerprints equal"),
        "{v}"
    );

    // The incident: after this moment a bad change lands, and a later backup contains it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let incident = jiff::Timestamp::now().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    c.client("app")
        .unwrap()
        .execute("DELETE FROM orders WHERE id <= 100; INSERT INTO orders (item) VALUES ('ransom note');")
        .unwrap();
    let second = run(&env, &cfg, &["--json", "backup", "db"]);
    second.ok();
    let second_id = second.json()["snapshot_id"].as_str().unwrap().to_string();
    run(&env, &cfg, &["verify", "restore", "db", &second_id]).ok();

    // Candidates: verified, before the incident.
    let list = run(
        &env,
        &cfg,
        &["--json", "snapshots", "--verified", "--before", &incident],
    );
    list.ok();
    let ids: Vec<String> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![first_id.clone()]);
    let all = run(&env, &cfg, &["snapshots"]);
    assert!(all.stdout.contains("Verified") && all.stdout.contains("yes"), "{all}");

    // Clean restore: the bad change is absent.
    let target = c.url("app_clean");
    let r = run(
        &env,
        &cfg,
        &["--json", "restore", "db", "--clean-before", &incident, "--to", &target],
    );
    r.ok();
    assert_eq!(r.json()["snapshot_id"].as_str().unwrap(), first_id);
    assert_eq!(count(&c, "app_clean", "SELECT count(*) FROM orders"), 500);
    assert_eq!(
        count(
            &c,
            "app_clean",
            "SELECT count(*) FROM orders WHERE item = 'ransom note'"
        ),
        0
    );

    // An existing, non-empty database is refused; nothing changes.
    let r = run(&env, &cfg, &["restore", "db", "latest", "--to", &target]);
    r.expect_code(19)
        .one_line_error(&["app_clean", "not empty", "--force-overwrite"]);
    assert_eq!(count(&c, "app_clean", "SELECT count(*) FROM orders"), 500);

    // --force-overwrite takes a safety backup first, then replaces it with the latest backup.
    let r = run(
        &env,
        &cfg,
        &[
            "--json",
            "restore",
            "db",
            "latest",
            "--to",
            &target,
            "--force-overwrite",
        ],
    );
    r.ok();
    assert_eq!(r.json()["snapshot_id"].as_str().unwrap(), second_id);
    let safety = r.json()["safety_backup"].as_str().unwrap().to_string();
    assert_eq!(
        count(
            &c,
            "app_clean",
            "SELECT count(*) FROM orders WHERE item = 'ransom note'"
        ),
        1
    );
    let tagged = run(&env, &cfg, &["--json", "snapshots", "--tag", "safety"]);
    assert_eq!(tagged.json()[0]["id"].as_str().unwrap(), safety);
    // The safety backup is never `latest` of the source.
    let r = run(&env, &cfg, &["--json", "restore", "db", "--to", &c.url("app_latest")]);
    assert_eq!(r.json()["snapshot_id"].as_str().unwrap(), second_id, "{r}");

    // A forensic backup is labelled and never chosen by `latest`.
    let f = run(&env, &cfg, &["--json", "backup", "db", "--force"]);
    f.ok();
    assert_eq!(f.json()["postgres"]["forensic"], true);
    assert!(f.json()["tags"].as_array().unwrap().iter().any(|t| t == "forensic"));
    let r = run(&env, &cfg, &["--json", "restore", "db", "--to", &c.url("app_latest2")]);
    assert_eq!(r.json()["snapshot_id"].as_str().unwrap(), second_id, "{r}");

    // A failing check fails the restore test (exit 18), recorded and shown as FAILED.
    let bad_cfg = config(&env, &c, &["SELECT count(*) = 0 FROM orders"], "");
    let v = run(&env, &bad_cfg, &["verify", "restore", "db", &first_id]);
    v.expect_code(18);
    assert!(v.stderr.contains("1 failed check"), "{v}");
    let list = run(&env, &cfg, &["--json", "snapshots"]);
    let s = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == first_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(s["verified"], false);
    // ...and the snapshot is no longer a clean-restore candidate.
    let r = run(
        &env,
        &cfg,
        &["restore", "db", "--clean-before", &incident, "--to", &c.url("app_x")],
    );
    r.expect_code(11).one_line_error(&["restore test"]);

    // A fingerprint that differs (stored one tampered with through the engine) fails too.
    let repo = lifeboat_repo::Repository::open(
        lifeboat_repo::backend::open(env.repo.to_str().unwrap()).unwrap(),
        PASSWORD.as_bytes(),
    )
    .unwrap();
    let (_, mut snap) = repo.find_snapshot(&second_id).unwrap();
    snap.source.as_mut().unwrap()["databases"][0]["tables"][0]["hash"] = serde_json::json!("12345");
    let tampered = repo.write_snapshot(&snap).unwrap().to_hex();
    let v = run(&env, &cfg, &["verify", "restore", "db", &tampered]);
    v.expect_code(18);
    assert!(v.stdout.contains("different content"), "{v}");

    // Forgetting a snapshot deletes its attestations.
    let att_dir = env.repo.join("attestations").join(&tampered);
    assert!(att_dir.exists());
    run(
        &env,
        &cfg,
        &["forget", "--keep-tag", "safety", "--keep-tag", "forensic"],
    )
    .ok();
    assert!(!att_dir.exists() || std::fs::read_dir(&att_dir).unwrap().next().is_none());
    run(&env, &cfg, &["check"]).ok();
}

#[test]
fn bad_input_gets_one_line_errors_and_distinct_codes() {
    let Some((_tools, c)) = cluster() else { return };
    let env = Env::with_repo(&[]);
    let cfg = config(&env, &c, &[], "");

    // Wrong password: exit 13, the password never printed, nothing stored.
    let mut a: Vec<&OsStr> = vec![OsStr::new("--config"), cfg.as_os_str()];
    a.extend(["backup", "db"].iter().map(OsStr::new));
    let r = env.run_env(&a, &[("PGPASSWORD", OsStr::new("wrong-pw"))]);
    r.expect_code(13).one_line_error(&["authentication"]);
    assert!(!r.stderr.contains("wrong-pw"));
    assert_eq!(
        run(&env, &cfg, &["--json", "snapshots"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Unreachable server: exit 12.
    let port = lifeboat_pg::cluster::free_port().unwrap();
    let text = format!(
        "[sources.db]\nkind = \"postgres\"\nurl = \"postgres://postgres:{DBPASS}@127.0.0.1:{port}/app\"\nmode = \"logical\"\n"
    );
    let down = env.path("down.toml");
    std::fs::write(&down, text).unwrap();
    let r = run(&env, &down, &["backup", "db"]);
    r.expect_code(12).one_line_error(&["unreachable"]);
    assert!(!r.stderr.contains(DBPASS), "{r}");

    // Malformed URLs: exit 2.
    let bad = env.path("bad.toml");
    std::fs::write(&bad, "[sources.db]\nkind = \"postgres\"\nurl = \"mysql://x/app\"\n").unwrap();
    run(&env, &bad, &["backup", "db"])
        .expect_code(2)
        .one_line_error(&["postgres://"]);
    run(&env, &cfg, &["backup", "db"]).ok();
    run(&env, &cfg, &["restore", "db", "--to", "mysql://x/y"])
        .expect_code(2)
        .one_line_error(&["postgres://"]);
    run(
        &env,
        &cfg,
        &[
            "restore",
            "db",
            "--to",
            &format!("postgres://postgres@127.0.0.1:{}", c.port()),
        ],
    )
    .expect_code(2)
    .one_line_error(&["name the database"]);
    // Not a configured source: exit 2.
    run(&env, &cfg, &["verify", "restore", "nope"])
        .expect_code(2)
        .one_line_error(&["nope"]);
    // Restoring into the source database itself without --force-overwrite: refused, intact.
    run(&env, &cfg, &["restore", "db", "--to", &c.url("app")])
        .expect_code(19)
        .one_line_error(&["not empty"]);
    assert_eq!(count(&c, "app", "SELECT count(*) FROM orders"), 500);
    // A password inside --to is used but never printed.
    let with_pw = format!("postgres://postgres:{DBPASS}@127.0.0.1:{}/app", c.port());
    let r = env.run(&["--config", cfg.to_str().unwrap(), "restore", "db", "--to", &with_pw]);
    r.expect_code(19);
    assert!(!r.stderr.contains(DBPASS) && !r.stdout.contains(DBPASS), "{r}");
}

#[test]
fn restore_to_another_server_stops_at_the_first_error_and_no_owner_fixes_it() {
    let Some((tools, c)) = cluster() else { return };
    c.client("app")
        .unwrap()
        .execute("CREATE ROLE appowner; ALTER TABLE orders OWNER TO appowner;")
        .unwrap();
    let env = Env::with_repo(&[]);
    let cfg = config(&env, &c, &[], "");
    run(&env, &cfg, &["backup", "db"]).ok();
    // Another server, without the role `appowner`.
    let opts = ClusterOptions {
        password: Some(DBPASS.into()),
        ..Default::default()
    };
    let mut other = ScratchCluster::create(&tools, &opts).unwrap();
    other.start().unwrap();
    let r = run(&env, &cfg, &["restore", "db", "--to", &other.url("app")]);
    r.expect_code(18).one_line_error(&["rolled back", "appowner"]);
    let admin = other.client("postgres").unwrap();
    assert_eq!(
        admin
            .query_value("SELECT count(*) FROM pg_database WHERE datname = 'app'")
            .unwrap()
            .as_deref(),
        Some("0"),
        "the database it created is removed again"
    );
    run(&env, &cfg, &["restore", "db", "--to", &other.url("app"), "--no-owner"]).ok();
    assert_eq!(count(&other, "app", "SELECT count(*) FROM orders"), 500);
    // --force-overwrite onto it with a restore that fails: the database it was to replace is
    // untouched (restored under another name first, swapped in only when complete).
    other
        .client("app")
        .unwrap()
        .execute("INSERT INTO orders (item) VALUES ('kept');")
        .unwrap();
    let r = run(
        &env,
        &cfg,
        &[
            "restore",
            "db",
            "--to",
            &other.url("app"),
            "--force-overwrite",
            "--no-safety-backup",
        ],
    );
    r.expect_code(18)
        .one_line_error(&["rolled back", "\"app\" was not changed", "appowner"]);
    assert_eq!(
        count(&other, "app", "SELECT count(*) FROM orders WHERE item = 'kept'"),
        1
    );
    assert_eq!(
        count(
            &other,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'lifeboat\\_%'"
        ),
        0,
        "no staging database left behind"
    );
}

/// A table held locked by another session (an ALTER TABLE, a `LOCK … ACCESS EXCLUSIVE`): the
/// backup fails after the source's `lock_timeout` with one line that says so, instead of
/// waiting silently for as long as the lock is held; nothing is committed.
#[test]
fn a_locked_table_fails_the_backup_after_lock_timeout() {
    let Some((tools, c)) = cluster() else { return };
    let env = Env::with_repo(&[]);
    let cfg = config(&env, &c, &[], "lock_timeout = \"2s\"\n");
    let mut holder = tools.command("psql").unwrap();
    c.conn("app").apply(&mut holder);
    holder.args([
        "-X",
        "-q",
        "-c",
        "BEGIN; LOCK orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30); COMMIT;",
    ]);
    let mut holder = holder
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until the lock is granted.
    let granted = "SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = l.relation WHERE r.relname = 'orders' AND l.mode = 'AccessExclusiveLock' AND l.granted";
    let t0 = std::time::Instant::now();
    while count(&c, "app", granted) == 0 {
        assert!(t0.elapsed().as_secs() < 10, "the lock was never taken");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let started = std::time::Instant::now();
    let r = run(&env, &cfg, &["backup", "db"]);
    let took = started.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    r.expect_code(1)
        .one_line_error(&["timed out after 2 s", "lock", "\"app\""]);
    assert!(took.as_secs() < 20, "waited {took:?}");
    let snaps = run(&env, &cfg, &["--json", "snapshots"]).json();
    assert_eq!(snaps.as_array().unwrap().len(), 0, "nothing committed: {snaps}");
    // A malformed lock_timeout is a config error.
    let bad = config(&env, &c, &[], "lock_timeout = \"soon\"\n");
    run(&env, &bad, &["backup", "db"])
        .expect_code(2)
        .one_line_error(&["lock_timeout"]);
}

/// `latest` of a source means a backup of *its* database: another host writing into the same
/// repository under the same source name (another URL) is never restored by mistake.
#[test]
fn latest_never_picks_another_hosts_database_under_the_same_name() {
    let Some((_tools, c)) = cluster() else { return };
    c.client("postgres").unwrap().execute("CREATE DATABASE other;").unwrap();
    c.client("other")
        .unwrap()
        .execute("CREATE TABLE elsewhere (x int); INSERT INTO elsewhere VALUES (1);")
        .unwrap();
    let env = Env::with_repo(&[]);
    let cfg = config(&env, &c, &[], "");
    let other = config_for(&env, &c, "other", &[], "");
    let mut a: Vec<&OsStr> = vec![OsStr::new("--config"), other.as_os_str()];
    a.extend(["backup", "db"].iter().map(OsStr::new));
    env.run_env(
        &a,
        &[
            ("PGPASSWORD", OsStr::new(DBPASS)),
            ("LIFEBOAT_HOST", OsStr::new("db2.example")),
        ],
    )
    .ok();
    // Only the other host's backup so far: refused, naming where it came from.
    let to = format!("postgres://postgres@127.0.0.1:{}/which_one", c.port());
    run(&env, &cfg, &["restore", "db", "latest", "--to", &to])
        .expect_code(11)
        .one_line_error(&["/other", "db2.example", "not from"]);
    // This host's own backup is the one restored, although the other one is newer.
    run(&env, &cfg, &["backup", "db"]).ok();
    env.run_env(
        &a,
        &[
            ("PGPASSWORD", OsStr::new(DBPASS)),
            ("LIFEBOAT_HOST", OsStr::new("db2.example")),
        ],
    )
    .ok();
    run(&env, &cfg, &["restore", "db", "latest", "--to", &to]).ok();
    assert_eq!(count(&c, "which_one", "SELECT count(*) FROM orders"), 500);
    // config validate lists database sources too.
    let v = run(&env, &cfg, &["config", "validate"]);
    v.ok();
    assert!(
        v.stdout.contains("1 database source(s)") && v.stdout.contains("logical"),
        "{v}"
    );
    let j = run(&env, &cfg, &["--json", "config", "validate"]).json();
    assert_eq!(j["db_sources"][0]["name"], "db", "{j}");
}

/// A database's owner, settings and encoding come back with it. `pg_dump` without `--create`
/// leaves them out: the restored copy would belong to the restoring superuser (since PostgreSQL
/// 15 the application role could then not create tables in `public`), and unqualified names
/// would miss the schema the database's `search_path` pointed at (the check below).
#[test]
fn restore_brings_back_owner_settings_and_encoding() {
    let Some((_tools, c)) = cluster() else { return };
    c.client("postgres")
        .unwrap()
        .execute(
            "CREATE ROLE app_owner LOGIN;
             CREATE DATABASE shopdb OWNER app_owner TEMPLATE template0 ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C';
             ALTER DATABASE shopdb SET search_path = \"$user\", shop, public;
             ALTER DATABASE shopdb SET work_mem = '8MB';
             ALTER DATABASE shopdb CONNECTION LIMIT 50;
             CREATE ROLE outsider LOGIN;
             REVOKE CONNECT, TEMPORARY ON DATABASE shopdb FROM PUBLIC;
             GRANT CONNECT ON DATABASE shopdb TO app_owner;",
        )
        .unwrap();
    c.client("shopdb")
        .unwrap()
        .execute("CREATE SCHEMA shop; CREATE TABLE shop.items (id int); INSERT INTO shop.items SELECT generate_series(1, 10);")
        .unwrap();
    let env = Env::with_repo(&[]);
    let cfg = config_for(&env, &c, "shopdb", &["SELECT count(*) = 10 FROM items"], "");
    let b = run(&env, &cfg, &["--json", "backup", "db"]);
    b.ok();
    let props = &b.json()["postgres"]["databases"][0]["properties"];
    assert_eq!(props["owner"], "app_owner", "{b}");
    assert_eq!(props["encoding"], "SQL_ASCII", "{b}");
    // The restore test runs the check with the database's search_path: `items` is found.
    let v = run(&env, &cfg, &["verify", "restore", "db"]);
    v.ok();
    assert!(v.stdout.contains("PASSED"), "{v}");

    let target = c.url("shop_restored");
    run(&env, &cfg, &["restore", "db", "latest", "--to", &target]).ok();
    let admin = c.client("postgres").unwrap();
    let row = admin
        .query("SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate FROM pg_database WHERE datname = 'shop_restored'")
        .unwrap();
    assert_eq!(
        row[0],
        vec![Some("app_owner".into()), Some("SQL_ASCII".into()), Some("C".into())]
    );
    let restored = c.client("shop_restored").unwrap();
    assert_eq!(
        restored.query_value("SHOW search_path").unwrap().as_deref(),
        Some("\"$user\", shop, public")
    );
    assert_eq!(restored.query_value("SHOW work_mem").unwrap().as_deref(), Some("8MB"));
    // Who may connect comes back too: a database closed to PUBLIC stays closed.
    let access = |db: &str| {
        admin
            .query(&format!(
                "SELECT datconnlimit, has_database_privilege('outsider', '{db}', 'CONNECT'), \
                 has_database_privilege('app_owner', '{db}', 'CONNECT') FROM pg_database WHERE datname = '{db}'"
            ))
            .unwrap()
    };
    assert_eq!(
        access("shop_restored")[0],
        vec![Some("50".into()), Some("f".into()), Some("t".into())]
    );
    assert_eq!(count(&c, "shop_restored", "SELECT count(*) FROM items"), 10);

    // Replacing the database keeps them too (restored under a staging name, then swapped in).
    c.client("shopdb").unwrap().execute("DELETE FROM shop.items;").unwrap();
    run(
        &env,
        &cfg,
        &[
            "restore",
            "db",
            "latest",
            "--force-overwrite",
            "--no-safety-backup",
            "--to",
            &c.url("shopdb"),
        ],
    )
    .ok();
    assert_eq!(count(&c, "shopdb", "SELECT count(*) FROM items"), 10);
    let owner = admin
        .query_value("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shopdb'")
        .unwrap();
    assert_eq!(owner.as_deref(), Some("app_owner"));
    assert_eq!(
        access("shopdb")[0],
        vec![Some("50".into()), Some("f".into()), Some("t".into())]
    );
}
