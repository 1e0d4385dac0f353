//! S3 locations against a real S3-compatible server (moto on loopback): one bucket per region,
//! a folder for the NAS. Fault tests take a location down with a cutting proxy, damage or delete
//! objects through the server's own API, and simulate append-only credentials with the
//! location's `append_only` flag (moto accepts any credentials, so it cannot deny a delete).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::moto::{Moto, Proxy, garage, moto_only, region, s3_tests_enabled};

/// A test environment whose repository is described by a config file.
struct Multi {
    env: Env,
    config: PathBuf,
}

impl Multi {
    fn new(locations: &[(&str, String)]) -> Multi {
        let env = Env::new();
        let names: Vec<String> = locations.iter().map(|(n, _)| format!("{n:?}")).collect();
        let mut t = format!("[repository]\nlocations = [{}]\n", names.join(", "));
        for (n, body) in locations {
            t.push_str(&format!("\n[locations.{n}]\n{body}\n"));
        }
        let config = env.path("lifeboat.toml");
        std::fs::write(&config, t).unwrap();
        Multi { env, config }
    }

    fn command(&self) -> std::process::Command {
        let mut c = self.env.command();
        c.env_remove("LIFEBOAT_REPO").env("LIFEBOAT_CONFIG", &self.config);
        // moto takes any key; Garage checks them (the job exports its key).
        if garage().is_none() {
            c.env("AWS_ACCESS_KEY_ID", "lifeboat-test")
                .env("AWS_SECRET_ACCESS_KEY", "lifeboat-test-secret");
        }
        c.env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION");
        c
    }

    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        let mut args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
        // Garage ignores conditional writes: prune runs only with the operator's promise.
        if garage().is_some() && args.iter().any(|a| *a == "prune" || *a == "--prune") {
            args.push(OsStr::new("--assume-no-other-prune"));
        }
        let mut c = self.command();
        c.args(&args);
        let out = c.output().expect("run lifeboat");
        Run::from_output(&args, out)
    }

    fn locations(&self) -> serde_json::Value {
        self.run(&["--json", "locations"]).ok().json()
    }
}

fn s3_location(m_endpoint: &str, bucket: &str, region_name: &str) -> String {
    let region = region(region_name);
    format!(
        "url = \"s3://{bucket}/lifeboat\"\nregion = \"{region}\"\nendpoint = \"{m_endpoint}\"\nmax_retries = 1\nretry_timeout = \"3s\""
    )
}

fn nas(dir: &Path) -> String {
    format!("url = \"{}\"", dir.display())
}

fn source(env: &Env) -> PathBuf {
    let src = env.path("src");
    write_random(&src.join("big.bin"), 3 << 20, 1);
    write_random(&src.join("dir/small.txt"), 5000, 2);
    std::fs::write(src.join("dir/hello.txt"), "hello\n").unwrap();
    src
}

fn lag(v: &serde_json::Value, name: &str) -> (u64, bool) {
    let l = v
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no location {name} in {v}"));
    (l["lag_snapshots"].as_u64().unwrap(), l["reachable"].as_bool().unwrap())
}

#[test]
fn single_s3_location_round_trip_and_prune() {
    let Some(()) = s3_tests_enabled() else { return };
    let m = Moto::shared();
    let bucket = m.bucket("single");
    let e = Env::new();
    let src = source(&e);
    let repo = format!("s3://{bucket}/some/prefix");
    let mut env: Vec<(&str, &OsStr)> = vec![
        ("LIFEBOAT_REPO", OsStr::new(&repo)),
        ("AWS_ENDPOINT_URL", OsStr::new(Box::leak(m.endpoint().into_boxed_str()))),
        ("AWS_REGION", OsStr::new(region("eu-central-1"))),
    ];
    if garage().is_none() {
        env.push(("AWS_ACCESS_KEY_ID", OsStr::new("k")));
        env.push(("AWS_SECRET_ACCESS_KEY", OsStr::new("s")));
    }
    e.run_env(&["init"], &env).ok();
    e.run_env(&[OsStr::new("backup"), src.as_os_str()], &env).ok();
    assert!(
        m.keys(&bucket, "some/prefix/snapshots/").len() == 1,
        "the snapshot is stored under the prefix"
    );
    let target = e.path("restore");
    e.run_env(
        &[
            OsStr::new("restore"),
            OsStr::new("latest"),
            OsStr::new("-t"),
            target.as_os_str(),
        ],
        &env,
    )
    .ok();
    assert_same_tree(&src, &restored(&target, &src));
    let c = e.run_env(&["check", "--read-data"], &env);
    c.ok();
    // moto honours If-None-Match, so the lease is exclusive and prune runs.
    let mut prune = vec!["prune", "--grace", "0s", "--unsafe-short-grace"];
    if garage().is_some() {
        prune.push("--assume-no-other-prune");
    }
    e.run_env(&prune, &env).ok();
    // A missing bucket is a clear one-line error naming the location.
    let bad: Vec<(&str, &OsStr)> = env
        .iter()
        .map(|(k, v)| {
            if *k == "LIFEBOAT_REPO" {
                (*k, OsStr::new("s3://no-such-bucket/x"))
            } else {
                (*k, *v)
            }
        })
        .collect();
    e.run_env(&["snapshots"], &bad).expect_code(7);
}

#[test]
fn three_locations_replicate_and_show_lag() {
    let Some(()) = s3_tests_enabled() else { return };
    let m = Moto::shared();
    let (b1, b2) = (m.bucket("use1"), m.bucket("usw2"));
    let probe = Env::new();
    let nas_dir = probe.path("nas");
    let t = Multi::new(&[
        ("primary", s3_location(&m.endpoint(), &b1, "us-east-1")),
        ("secondary", s3_location(&m.endpoint(), &b2, "us-west-2")),
        ("nas", nas(&nas_dir)),
    ]);
    let src = source(&t.env);
    t.run(&["init"]).ok();
    let r = t.run(&["--json", "backup", src.to_str().unwrap()]);
    let v = r.ok().json();
    assert_eq!(v["location"], "primary");
    assert_eq!(v["replication"].as_array().unwrap().len(), 2, "{v}");
    for n in ["primary", "secondary", "nas"] {
        assert_eq!(lag(&t.locations(), n), (0, true));
    }
    assert!(nas_dir.join("config").is_file());
    assert_eq!(m.keys(&b2, "lifeboat/snapshots/").len(), 1);

    // A backup that does not replicate leaves the others one snapshot behind.
    std::fs::write(src.join("dir/new.txt"), "new").unwrap();
    t.run(&["backup", "--no-replicate", src.to_str().unwrap()]).ok();
    let v = t.locations();
    assert_eq!(lag(&v, "secondary"), (1, true));
    assert_eq!(lag(&v, "nas"), (1, true));
    let text = t.run(&["locations"]);
    assert!(text.ok().stdout.contains("1 / "), "{text}");

    t.run(&["replicate", "--to", "secondary"]).ok();
    let v = t.locations();
    assert_eq!(lag(&v, "secondary"), (0, true));
    assert_eq!(lag(&v, "nas"), (1, true));
    assert!(v[1]["status"]["last_replication"]["time"].is_string(), "{v}");
    let r = t.run(&["--json", "replicate"]);
    let reps = r.ok().json();
    assert!(reps.as_array().unwrap().iter().all(|x| x["error"].is_null()), "{reps}");
    assert_eq!(lag(&t.locations(), "nas"), (0, true));
    // Resumable: a second run copies nothing.
    let again = t.run(&["--json", "replicate"]).ok().json();
    assert!(
        again.as_array().unwrap().iter().all(|x| x["report"]["copied"] == 0),
        "{again}"
    );

    // Each location checks on its own.
    for n in ["primary", "secondary", "nas"] {
        let c = t.run(&["check", "--read-data", "--location", n]);
        assert!(c.ok().stdout.contains("no errors found"), "{c}");
    }
    assert!(t.locations()[2]["status"]["last_check"]["time"].is_string());
    t.run(&["check", "--location", "nowhere"])
        .expect_code(2)
        .one_line_error(&["nowhere", "primary"]);
}

#[test]
fn one_location_down_backup_and_restore_still_work() {
    let Some(()) = s3_tests_enabled() else { return };
    let m = Moto::shared();
    let (b1, b2) = (m.bucket("down1"), m.bucket("down2"));
    let proxy = Proxy::start(m.port);
    let probe = Env::new();
    let t = Multi::new(&[
        ("primary", s3_location(&proxy.endpoint(), &b1, "us-east-1")),
        ("secondary", s3_location(&m.endpoint(), &b2, "us-west-2")),
        ("nas", nas(&probe.path("nas"))),
    ]);
    let src = source(&t.env);
    t.run(&["init"]).ok();
    t.run(&["backup", src.to_str().unwrap()]).ok();

    proxy.cut();
    std::fs::write(src.join("dir/while-down.txt"), "written while the primary was down").unwrap();
    let r = t.run(&["--json", "backup", src.to_str().unwrap()]);
    let v = r.ok().json();
    assert_eq!(v["location"], "secondary", "{r}");
    assert!(r.stderr.contains("primary"), "the outage is reported: {r}");
    let target = t.env.path("restore");
    let r = t.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
    ]);
    r.ok();
    assert_same_tree(&src, &restored(&target, &src));
    let v = t.locations();
    assert!(!lag(&v, "primary").1, "{v}");
    assert_eq!(lag(&v, "nas"), (0, true));

    // Back up: replication catches the primary up.
    proxy.restore();
    t.run(&["replicate"]).ok();
    assert_eq!(lag(&t.locations(), "primary"), (0, true));
    assert_eq!(m.keys(&b1, "lifeboat/snapshots/").len(), 2);
}

#[test]
fn damaged_and_missing_objects_are_found_repaired_and_restore_is_unaffected() {
    let Some(()) = s3_tests_enabled() else { return };
    let m = Moto::shared();
    let b1 = m.bucket("dmg");
    let probe = Env::new();
    let nas_dir = probe.path("nas");
    let t = Multi::new(&[
        ("primary", s3_location(&m.endpoint(), &b1, "us-east-1")),
        ("nas", nas(&nas_dir)),
    ]);
    let src = source(&t.env);
    t.run(&["init"]).ok();
    t.run(&["backup", src.to_str().unwrap()]).ok();

    // Primary: every pack overwritten with garbage of the same size. NAS: index deleted.
    let packs = m.keys(&b1, "lifeboat/data/");
    assert!(!packs.is_empty());
    for k in &packs {
        let len = m.get(&b1, k).len();
        m.put(&b1, k, &random_bytes(len, 99));
    }
    for f in objects(&nas_dir, "index") {
        std::fs::remove_file(f).unwrap();
    }

    // Restore reads around both problems and says so.
    let target = t.env.path("restore");
    let r = t.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
    ]);
    r.ok();
    assert!(r.stdout.contains("fallback"), "{r}");
    assert_same_tree(&src, &restored(&target, &src));

    t.run(&["check", "--read-data", "--location", "primary"]).expect_code(5);
    t.run(&["check", "--location", "nas"]).expect_code(5);

    let r = t.run(&["--json", "repair", "--location", "primary", "--from", "nas"]);
    let v = r.ok().json();
    assert_eq!(v["report"]["replaced"].as_u64().unwrap(), packs.len() as u64, "{v}");
    t.run(&["repair", "--location", "nas"]).ok();
    for n in ["primary", "nas"] {
        let c = t.run(&["check", "--read-data", "--location", n]);
        assert!(c.ok().stdout.contains("no errors found"), "{c}");
    }
}

#[test]
fn append_only_location_backs_up_but_refuses_prune() {
    let Some(()) = s3_tests_enabled() else { return };
    let m = Moto::shared();
    let b1 = m.bucket("appendonly");
    let t = Multi::new(&[(
        "primary",
        format!("{}\nappend_only = true", s3_location(&m.endpoint(), &b1, "us-east-1")),
    )]);
    let src = source(&t.env);
    t.run(&["init"]).ok();
    t.run(&["backup", src.to_str().unwrap()]).ok();
    std::fs::write(src.join("more.txt"), "more").unwrap();
    t.run(&["backup", src.to_str().unwrap()]).ok();
    t.run(&["prune"])
        .expect_code(23)
        .one_line_error(&["append-only", "prune", "primary"]);
    t.run(&["forget", "--keep-last", "1"])
        .expect_code(23)
        .one_line_error(&["append-only", "forget"]);
    t.run(&["forget", "--keep-last", "1", "--dry-run"]).ok();
    assert_eq!(m.keys(&b1, "lifeboat/snapshots/").len(), 2, "nothing was deleted");
    let v = t.locations();
    assert_eq!(v[0]["append_only"], true);
}

#[test]
fn prune_and_forget_apply_to_every_location_and_catch_up_later() {
    let Some(()) = s3_tests_enabled() else { return };
    let m = Moto::shared();
    let (b1, b2) = (m.bucket("prune1"), m.bucket("prune2"));
    let proxy = Proxy::start(m.port);
    let t = Multi::new(&[
        ("primary", s3_location(&m.endpoint(), &b1, "us-east-1")),
        ("secondary", s3_location(&proxy.endpoint(), &b2, "us-west-2")),
    ]);
    let src = source(&t.env);
    t.run(&["init"]).ok();
    t.run(&["backup", src.to_str().unwrap()]).ok();
    write_random(&src.join("second.bin"), 1 << 20, 5);
    t.run(&["backup", src.to_str().unwrap()]).ok();
    assert_eq!(m.keys(&b2, "lifeboat/snapshots/").len(), 2);

    // The secondary is down while a snapshot is forgotten and pruned.
    proxy.cut();
    let r = t.run(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--grace",
        "0s",
        "--unsafe-short-grace",
    ]);
    r.ok();
    assert!(r.stderr.contains("secondary"), "{r}");
    assert_eq!(m.keys(&b1, "lifeboat/snapshots/").len(), 1);
    assert_eq!(m.keys(&b2, "lifeboat/snapshots/").len(), 2);
    // The mark's grace period is over: the second prune deletes packs at the primary.
    t.run(&["prune", "--grace", "0s", "--unsafe-short-grace"]).ok();

    // Back online: replication replays the deletions instead of resurrecting the snapshot.
    proxy.restore();
    t.run(&["replicate"]).ok();
    assert_eq!(m.keys(&b1, "lifeboat/snapshots/").len(), 1, "not resurrected");
    assert_eq!(m.keys(&b2, "lifeboat/snapshots/").len(), 1, "deletion replayed");
    let (mut p1, mut p2) = (m.keys(&b1, "lifeboat/data/"), m.keys(&b2, "lifeboat/data/"));
    p1.sort();
    p2.sort();
    assert_eq!(p1, p2, "the pruned packs are gone from the secondary too, in one pass");
    for n in ["primary", "secondary"] {
        let c = t.run(&["check", "--read-data", "--location", n]);
        assert!(c.ok().stdout.contains("no errors found"), "{c}");
    }
    let target = t.env.path("restore");
    t.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
    ])
    .ok();
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn server_lost_mid_backup_fails_cleanly_and_the_next_backup_resumes() {
    let Some(()) = s3_tests_enabled() else { return };
    if moto_only("needs a dedicated server it can stop and restart") {
        return;
    }
    let m = Moto::shared();
    let b1 = m.bucket("midway");
    let proxy = Proxy::start(m.port);
    // The upload limit (a rate-limit test on its own) makes the backup last a few seconds, so
    // index checkpoints exist when the connection is cut.
    let t = Multi::new(&[(
        "primary",
        format!(
            "{}\nupload_limit = \"8MiB/s\"\nrequests_per_second = 200",
            s3_location(&proxy.endpoint(), &b1, "us-east-1")
        ),
    )]);
    let src = t.env.path("src");
    for i in 0..8 {
        write_random(&src.join(format!("f{i}.bin")), 5 << 20, 10 + i);
    }
    t.run(&["init", "--pack-size-mib", "4"]).ok();

    let mut c = t.command();
    c.args(["--json", "backup", "--checkpoint-interval", "1s", src.to_str().unwrap()]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = Instant::now();
    while proxy.upstream_bytes.load(std::sync::atomic::Ordering::Relaxed) < 28 << 20 {
        assert!(Instant::now() < deadline, "backup made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    // 28 MiB at 8 MiB/s after an 8 MiB burst: the limit held.
    assert!(started.elapsed() >= Duration::from_millis(2000), "upload limit ignored");
    proxy.cut();
    let out = child.wait_with_output().unwrap();
    let r = Run::from_output(&[], out);
    if r.code == 0 {
        // It finished before the cut took effect; nothing more to prove here.
        eprintln!("backup finished before the cut");
        return;
    }
    r.expect_code(1).one_line_error(&["primary"]);
    eprintln!("interrupted backup: {}", r.stderr.trim());
    eprintln!(
        "index after the cut: {:?}; cache: {:?}",
        m.keys(&b1, "lifeboat/index/"),
        all_files(&t.env.cache)
    );
    assert_eq!(
        m.keys(&b1, "lifeboat/snapshots/").len(),
        0,
        "no snapshot without its data"
    );

    proxy.restore();
    let c = t.run(&["check"]);
    c.ok();
    let v = t.run(&["--json", "backup", src.to_str().unwrap()]).ok().json();
    eprintln!("resumed backup: {v}");
    let added = v["summary"]["bytes_added"].as_u64().unwrap();
    assert!(
        v["resumed_files"].as_u64().unwrap() > 0 && added < v["summary"]["bytes_total"].as_u64().unwrap(),
        "the second backup resumes from the checkpoints: {v}"
    );
    let target = t.env.path("restore");
    t.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
    ])
    .ok();
    assert_same_tree(&src, &restored(&target, &src));
    t.run(&["check", "--read-data"]).ok();
}

#[test]
fn throttling_is_retried_and_the_final_error_names_location_operation_and_status() {
    let Some(()) = s3_tests_enabled() else { return };
    let m = Moto::shared();
    let b1 = m.bucket("slowdown");
    let proxy = Proxy::start(m.port);
    let t = Multi::new(&[(
        "primary",
        format!(
            "url = \"s3://{b1}/lifeboat\"\nendpoint = \"{}\"\nregion = \"{}\"\nmax_retries = 3\nretry_timeout = \"20s\"",
            proxy.endpoint(),
            region("us-east-1")
        ),
    )]);
    let src = source(&t.env);
    t.run(&["init"]).ok();
    // Two SlowDown answers in a row: the backoff retries get through.
    proxy.throttle_next.store(2, std::sync::atomic::Ordering::SeqCst);
    t.run(&["backup", src.to_str().unwrap()]).ok();
    assert_eq!(proxy.throttled.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Throttled for good: after the retry cap, one line with the location, the operation, the
    // object and the last status.
    proxy.throttle_next.store(1000, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let r = t.run(&["snapshots"]);
    r.expect_code(1)
        .one_line_error(&["primary", "config", "503", "after 3 retries"]);
    assert!(started.elapsed() < Duration::from_secs(30), "the retry cap holds");
    let tried = proxy.throttled.load(std::sync::atomic::Ordering::SeqCst) - 2;
    assert_eq!(tried, 4, "one request and 3 retries: {r}");
}

#[test]
fn object_lock_bucket_locks_every_object_and_prune_only_hides_versions() {
    let Some(()) = s3_tests_enabled() else { return };
    if moto_only("Garage has no S3 Object Lock") {
        return;
    }
    let m = Moto::shared();
    let bucket = format!("locked-{}", std::process::id());
    let (code, body) = m
        .request(
            "PUT",
            &format!("/{bucket}"),
            &[("x-amz-bucket-object-lock-enabled", "true")],
            b"",
        )
        .unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let rule = "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>32</Days></DefaultRetention></Rule></ObjectLockConfiguration>";
    let (code, body) = m
        .request("PUT", &format!("/{bucket}?object-lock"), &[], rule.as_bytes())
        .unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    // Without object_lock = true the bucket refuses the writes (no integrity header).
    let plain = Multi::new(&[("primary", s3_location(&m.endpoint(), &bucket, "us-east-1"))]);
    plain
        .run(&["init"])
        .expect_code(1)
        .one_line_error(&["primary", "Object Lock"]);

    let t = Multi::new(&[(
        "primary",
        format!(
            "{}\nobject_lock = true\nobject_lock_mode = \"bucket-default\"",
            s3_location(&m.endpoint(), &bucket, "us-east-1")
        ),
    )]);
    let src = source(&t.env);
    t.run(&["init"]).ok();
    t.run(&["backup", src.to_str().unwrap()]).ok();
    for folder in ["snapshots", "data", "index", "keys"] {
        let key = &m.keys(&bucket, &format!("lifeboat/{folder}/"))[0];
        let h = m.head_headers(&bucket, key);
        assert!(
            h.contains("x-amz-object-lock-retain-until-date") && h.contains("x-amz-object-lock-mode: governance"),
            "{key} is locked: {h}"
        );
    }
    // Forget and prune still work: deletes become delete markers, the versions stay locked.
    std::fs::write(src.join("more.txt"), "more").unwrap();
    t.run(&["backup", src.to_str().unwrap()]).ok();
    t.run(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--grace",
        "0s",
        "--unsafe-short-grace",
    ])
    .ok();
    assert_eq!(m.keys(&bucket, "lifeboat/snapshots/").len(), 1);
    let (_, versions) = m
        .request(
            "GET",
            &format!("/{bucket}?versions&prefix=lifeboat/snapshots/"),
            &[],
            b"",
        )
        .unwrap();
    let v = String::from_utf8_lossy(&versions);
    assert!(
        v.matches("<Version>").count() >= 2,
        "the forgotten snapshot's version is kept: {v}"
    );
    t.run(&["check", "--read-data"]).ok();
}

#[test]
fn credentials_that_cannot_delete_back_up_fine_and_prune_is_refused() {
    let Some(()) = s3_tests_enabled() else { return };
    let m = Moto::shared();
    let b1 = m.bucket("nodelete");
    // The store itself refuses every delete with 403 AccessDenied (no append_only flag here).
    let proxy = Proxy::start(m.port);
    proxy.deny_deletes.store(true, std::sync::atomic::Ordering::SeqCst);
    let t = Multi::new(&[("primary", s3_location(&proxy.endpoint(), &b1, "us-east-1"))]);
    let src = source(&t.env);
    t.run(&["init"]).ok();
    t.run(&["backup", "--checkpoint-interval", "1s", src.to_str().unwrap()])
        .ok();
    std::fs::write(src.join("more.txt"), "more").unwrap();
    t.run(&["backup", src.to_str().unwrap()]).ok();
    assert_eq!(
        proxy.denied.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "backup never deletes"
    );
    t.run(&["prune"])
        .expect_code(23)
        .one_line_error(&["append-only", "prune", "refused to delete"]);
    assert!(
        m.keys(&b1, "lifeboat/locks/prune").is_empty(),
        "refused before taking the lease"
    );
    t.run(&["forget", "--keep-last", "1"])
        .expect_code(23)
        .one_line_error(&["delete", "snapshots/"]);
    assert_eq!(m.keys(&b1, "lifeboat/snapshots/").len(), 2);

    // The maintenance credential (deletes allowed) prunes, and tidies the probe left behind.
    proxy.deny_deletes.store(false, std::sync::atomic::Ordering::SeqCst);
    t.run(&["forget", "--keep-last", "1", "--prune"]).ok();
    assert_eq!(m.keys(&b1, "lifeboat/snapshots/").len(), 1);
    assert!(
        m.keys(&b1, "lifeboat/locks/").is_empty(),
        "{:?}",
        m.keys(&b1, "lifeboat/locks/")
    );
}

/// Days from now until `t` (fractional).
fn days_until(t: jiff::Timestamp) -> f64 {
    t.duration_since(jiff::Timestamp::now()).as_secs_f64() / 86_400.0
}

#[test]
fn object_lock_sets_retain_until_from_the_policy_and_extends_what_kept_snapshots_need() {
    let Some(()) = s3_tests_enabled() else { return };
    if moto_only("Garage has no S3 Object Lock") {
        return;
    }
    let m = Moto::shared();
    // Object Lock enabled, no default retention: every lock below is lifeboat's own.
    let bucket = m.lock_bucket("perobj", None);
    let base = format!(
        "{}\nobject_lock = true",
        s3_location(&m.endpoint(), &bucket, "us-east-1")
    );
    // First with a short lock (1 d + 24 h grace + 1 d margin = 3 d), as if written long ago.
    let t = Multi::new(&[("primary", format!("{base}\nobject_lock_retain = \"1d\""))]);
    let src = source(&t.env);
    t.run(&["init"]).ok();
    t.run(&["backup", src.to_str().unwrap()]).ok();
    let first_packs = m.keys(&bucket, "lifeboat/data/");
    let first_all = m.keys(&bucket, "lifeboat/");
    for folder in ["config", "keys/", "data/", "index/", "snapshots/"] {
        for key in m.keys(&bucket, &format!("lifeboat/{folder}")) {
            let (mode, until) = m
                .retention(&bucket, &key)
                .unwrap_or_else(|| panic!("{key} is not locked"));
            assert_eq!(mode, "governance", "{key}");
            let d = days_until(until);
            assert!((2.9..3.1).contains(&d), "{key} locked for {d} days, expected 3");
        }
    }
    // Now the plan's policy (30 d) decides: 30 d + 24 h grace + 1 d margin = 32 d.
    let text = std::fs::read_to_string(&t.config).unwrap();
    std::fs::write(&t.config, text.replace("\nobject_lock_retain = \"1d\"", "")).unwrap();
    std::fs::write(src.join("more.txt"), "more").unwrap();
    t.run(&["backup", src.to_str().unwrap()]).ok();
    let all: Vec<String> = m.keys(&bucket, "lifeboat/");
    let new: Vec<&String> = all
        .iter()
        .filter(|k| !first_all.contains(k) && !k.contains("/status/") && !k.contains("/locks/"))
        .collect();
    assert!(new.iter().any(|k| k.contains("/snapshots/")), "{new:?}");
    for key in new {
        let (_, until) = m
            .retention(&bucket, key)
            .unwrap_or_else(|| panic!("{key} is not locked"));
        let d = days_until(until);
        assert!(d > 31.9, "{key} (new) locked for {d} days, expected 32");
    }
    let locs = t.locations();
    assert_eq!(locs[0]["object_lock"], "enabled, no default retention", "{locs}");
    assert_eq!(locs[0]["versioning"], "Enabled");
    assert_eq!(locs[0]["lock_retention"], "GOVERNANCE 32 d");
    assert_eq!(locs[0]["warnings"], serde_json::json!([]));

    // The first backup's packs are still used by the second snapshot (big.bin did not change),
    // which is kept 32 days: their 3-day lock is extended.
    let ext = t.run(&["--json", "locations", "--extend-locks"]).ok().json();
    let r = &ext[0]["report"];
    assert!(r["extended"].as_u64().unwrap() >= first_packs.len() as u64, "{ext}");
    assert_eq!(r["errors"], serde_json::json!([]));
    for key in &first_packs {
        let (_, until) = m.retention(&bucket, key).unwrap();
        let d = days_until(until);
        assert!(d > 31.9, "old pack {key} extended to {d} days, expected at least 32");
    }
    // Idempotent and cheap: the record says everything is locked long enough.
    let again = t.run(&["--json", "locations", "--extend-locks"]).ok().json();
    assert_eq!(again[0]["report"]["extended"], 0, "{again}");
    assert_eq!(again[0]["report"]["queried"], 0, "{again}");

    // A locked version cannot be deleted, even by a caller that may delete.
    let pack = &first_packs[0];
    let version = m.versions(&bucket, pack).into_iter().next().expect("a version");
    let (code, body) = m
        .request(
            "DELETE",
            &format!("/{bucket}/{pack}?versionId={version}"),
            &[(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            )],
            b"",
        )
        .unwrap();
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("AccessDenied"));

    // forget --prune extends locks too, and the repository stays intact.
    let f = t
        .run(&[
            "--json",
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--grace",
            "0s",
            "--unsafe-short-grace",
        ])
        .ok()
        .json();
    assert_eq!(f["object_lock"][0]["location"], "primary", "{f}");
    t.run(&["check", "--read-data"]).ok();
}

#[test]
fn locations_warns_when_the_bucket_lock_falls_short_of_the_policy() {
    let Some(()) = s3_tests_enabled() else { return };
    if moto_only("Garage has no S3 Object Lock") {
        return;
    }
    let m = Moto::shared();
    let short = m.lock_bucket("short", Some(("GOVERNANCE", 10)));
    let plain = m.bucket("nolock");
    let bucket_default = "object_lock = true\nobject_lock_mode = \"bucket-default\"";
    let t = Multi::new(&[
        (
            "locked",
            format!("{}\n{bucket_default}", s3_location(&m.endpoint(), &short, "us-east-1")),
        ),
        (
            "plain",
            format!("{}\n{bucket_default}", s3_location(&m.endpoint(), &plain, "us-east-1")),
        ),
        ("nas", nas(&t_dir())),
    ]);
    t.run(&["init"]).ok();
    let v = t.locations();
    let row = |n: &str| v.as_array().unwrap().iter().find(|l| l["name"] == n).unwrap().clone();
    let locked = row("locked");
    assert_eq!(locked["object_lock"], "enabled, GOVERNANCE default 10 d", "{v}");
    assert_eq!(locked["lock_retention"], serde_json::Value::Null);
    let w = locked["warnings"].to_string();
    assert!(
        w.contains("default retention (10 d) is shorter") && w.contains("32 d"),
        "{w}"
    );
    let p = row("plain");
    assert_eq!(p["object_lock"], "not enabled");
    assert!(p["warnings"].to_string().contains("no Object Lock"), "{p}");
    let nas_row = row("nas");
    assert_eq!(nas_row["object_lock"], serde_json::Value::Null);
    // The table shows the same and warns on stderr.
    let r = t.run(&["locations"]);
    r.ok();
    assert!(r.stdout.contains("enabled, GOVERNANCE default 10 d"), "{r}");
    assert!(r.stderr.contains("warning: location plain"), "{r}");
    // --extend-locks has nothing to do where no location sets per-object locks.
    t.run(&["locations", "--extend-locks"]).expect_code(2);
}

fn t_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("lifeboat-nas-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn refused_credentials_exit_24_naming_location_operation_and_status() {
    let Some(()) = s3_tests_enabled() else { return };
    // A dedicated server: IAM authentication applies to every request once enabled.
    if garage().is_some() {
        return refused_credentials_on_garage();
    }
    let m = Moto::start();
    let bucket = m.bucket("auth");
    let (key, secret, nobody_key, nobody_secret) = m.enable_auth();
    let t = Multi::new(&[("primary", s3_location(&m.endpoint(), &bucket, "us-east-1"))]);
    let run_as = |k: &str, s: &str, args: &[&str]| {
        let mut c = t.command();
        c.env("AWS_ACCESS_KEY_ID", k).env("AWS_SECRET_ACCESS_KEY", s).args(args);
        Run::from_output(&args.iter().map(OsStr::new).collect::<Vec<_>>(), c.output().unwrap())
    };
    // The right credentials are accepted. (moto 5.2 miscomputes the signature of a listing
    // whose prefix holds a slash, so nothing that lists can run on an authenticating moto.)
    run_as(&key, &secret, &["init"]).ok();
    run_as(&key, "not-the-secret", &["--json", "locations"])
        .expect_code(24)
        .one_line_error(&["primary", "403", "SignatureDoesNotMatch"]);
    run_as(&key, "not-the-secret", &["snapshots"])
        .expect_code(24)
        .one_line_error(&["primary", "head config", "403", "SignatureDoesNotMatch"]);
    run_as("AKIANOSUCHKEY0000000", &secret, &["snapshots"])
        .expect_code(24)
        .one_line_error(&["primary", "head config", "403", "InvalidAccessKeyId"]);
    run_as(&nobody_key, &nobody_secret, &["snapshots"])
        .expect_code(24)
        .one_line_error(&["primary", "head config", "403", "AccessDenied"]);
    // Several locations, all refusing: still exit 24 (not "no repository"), naming each.
    let two = Multi::new(&[
        ("primary", s3_location(&m.endpoint(), &bucket, "us-east-1")),
        ("secondary", s3_location(&m.endpoint(), &bucket, "us-west-2")),
    ]);
    let mut c = two.command();
    c.env("AWS_ACCESS_KEY_ID", &key)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .args(["forget", "--keep-last", "1", "--dry-run"]);
    Run::from_output(&[OsStr::new("forget")], c.output().unwrap())
        .expect_code(24)
        .one_line_error(&["primary", "secondary", "SignatureDoesNotMatch"]);
}

/// Garage checks every signature: the job's key works, a wrong secret or an unknown key id ends
/// with exit 24.
fn refused_credentials_on_garage() {
    let m = Moto::shared();
    let bucket = m.bucket("auth");
    let t = Multi::new(&[("primary", s3_location(&m.endpoint(), &bucket, "us-east-1"))]);
    let key = std::env::var("AWS_ACCESS_KEY_ID").expect("the job's key");
    let run_as = |k: &str, s: Option<&str>, args: &[&str]| {
        let mut c = t.command();
        c.env("AWS_ACCESS_KEY_ID", k);
        if let Some(s) = s {
            c.env("AWS_SECRET_ACCESS_KEY", s);
        }
        c.args(args);
        Run::from_output(&args.iter().map(OsStr::new).collect::<Vec<_>>(), c.output().unwrap())
    };
    run_as(&key, None, &["init"]).ok();
    run_as(&key, None, &["snapshots"]).ok();
    let r = run_as(&key, Some("not-the-secret"), &["snapshots"]);
    r.expect_code(24).one_line_error(&["primary", "403"]);
    eprintln!("Garage, wrong secret: {}", r.stderr.trim());
    let r = run_as("GK000000000000000000000000", Some("x"), &["snapshots"]);
    r.expect_code(24).one_line_error(&["primary", "403"]);
    eprintln!("Garage, unknown key: {}", r.stderr.trim());
}
