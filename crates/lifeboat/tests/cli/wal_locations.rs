//! `wal push` with several locations (two local folders standing for two regions): every
//! segment goes to every location in the same call; a location that is down is journalled,
//! reported, and caught up by a later call; `wal_min_locations = 2` turns a down location into a
//! failure PostgreSQL retries; `wal fetch` reads from the second location once the first is gone.

use std::path::{Path, PathBuf};

use crate::common::*;
use crate::moto::{Moto, Proxy, moto_only, s3_tests_enabled};

const SYSID: u64 = 7_100_000_000_000_000_077;

struct Two {
    env: Env,
    config: PathBuf,
    a: PathBuf,
    b: PathBuf,
    data: PathBuf,
}

impl Two {
    fn new(extra_repository: &str) -> Two {
        Two::with_checks(extra_repository, "")
    }

    fn with_checks(extra_repository: &str, checks: &str) -> Two {
        Two::with_b(extra_repository, checks, None)
    }

    /// `b_location`: the body of `[locations.b]` (default: a folder).
    fn with_b(extra_repository: &str, checks: &str, b_location: Option<String>) -> Two {
        let env = Env::new();
        let a = env.path("region-a");
        let b = env.path("region-b");
        std::fs::create_dir_all(&b).unwrap();
        let b_body = b_location.unwrap_or_else(|| format!("url = \"{}\"", b.display()));
        let config = env.path("lifeboat.toml");
        std::fs::write(
            &config,
            format!(
                "[repository]\nlocations = [\"a\", \"b\"]\n{extra_repository}\n[locations.a]\nurl = \"{}\"\n\n[locations.b]\n{b_body}\n{checks}",
                a.display()
            ),
        )
        .unwrap();
        let data = env.path("data");
        std::fs::create_dir_all(data.join("global")).unwrap();
        std::fs::create_dir_all(data.join("pg_wal/archive_status")).unwrap();
        std::fs::write(data.join("global/pg_control"), SYSID.to_ne_bytes()).unwrap();
        let t = Two {
            env,
            config,
            a,
            b,
            data,
        };
        t.run(&["init"]).ok();
        t
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut c = self.env.command();
        c.env_remove("LIFEBOAT_REPO").env("LIFEBOAT_CONFIG", &self.config);
        // moto takes any key.
        c.env("AWS_ACCESS_KEY_ID", "lifeboat-test")
            .env("AWS_SECRET_ACCESS_KEY", "lifeboat-test-secret")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_PROFILE");
        c.args(args);
        let out = c.output().expect("run lifeboat");
        let a: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        Run::from_output(&a, out)
    }

    fn segment(&self, i: u32) -> (String, Vec<u8>) {
        let name = format!("0000000100000000000000{i:02X}");
        let content = random_bytes(1 << 20, u64::from(i) + 500);
        std::fs::write(self.data.join("pg_wal").join(&name), &content).unwrap();
        std::fs::write(self.data.join(format!("pg_wal/archive_status/{name}.ready")), b"").unwrap();
        (name, content)
    }

    /// One archive_command call (`--batch 1`: exactly this segment), then `.ready` → `.done`.
    fn push(&self, name: &str) -> Run {
        let seg = format!("pg_wal/{name}");
        let r = self.run(&[
            "--json",
            "wal",
            "push",
            &seg,
            "--data-dir",
            self.data.to_str().unwrap(),
            "--batch",
            "1",
        ]);
        if r.code == 0 {
            let st = self.data.join("pg_wal/archive_status");
            let _ = std::fs::rename(st.join(format!("{name}.ready")), st.join(format!("{name}.done")));
        }
        r
    }

    fn has(&self, loc: &Path, name: &str) -> bool {
        loc.join(format!("named/wal-{SYSID}/{name}")).exists()
    }

    fn journal(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.env.cache.join("wal")).unwrap().flatten() {
            if let Ok(rd) = std::fs::read_dir(e.path().join("lag")) {
                out.extend(
                    rd.flatten()
                        .map(|f| f.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "json")),
                );
            }
        }
        out
    }

    fn fetch(&self, name: &str, content: &[u8]) {
        let dest = self.env.path(&format!("fetched-{name}"));
        self.run(&[
            "wal",
            "fetch",
            name,
            dest.to_str().unwrap(),
            "--data-dir",
            self.data.to_str().unwrap(),
            "--prefetch",
            "0",
        ])
        .ok();
        assert!(std::fs::read(&dest).unwrap() == content, "{name} fetched intact");
    }
}

fn location<'a>(j: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    j["locations"]
        .as_array()
        .unwrap_or_else(|| panic!("no locations in {j}"))
        .iter()
        .find(|l| l["name"] == name)
        .unwrap()
}

#[test]
fn every_segment_reaches_both_locations_and_a_down_one_is_caught_up() {
    let t = Two::with_checks(
        "",
        "\n[[checks]]\nname = \"wal-copies\"\nkind = \"wal_locations\"\nwarn_lag = \"1s\"\nmax_lag = \"1h\"\n",
    );
    let (s1, c1) = t.segment(1);
    let j = t.push(&s1).ok().json();
    assert_eq!(location(&j, "a")["complete"], true, "{j}");
    assert_eq!(location(&j, "b")["complete"], true, "{j}");
    assert!(t.has(&t.a, &s1) && t.has(&t.b, &s1));
    t.run(&["check", "--location", "b", "--read-data"]).ok();
    t.run(&["health"]).ok();

    // The second region goes away (unmounted NAS, lost region): exit 0, a warning, a lag record.
    let away = t.env.path("region-b-away");
    std::fs::rename(&t.b, &away).unwrap();
    let (s2, c2) = t.segment(2);
    let r = t.push(&s2);
    r.ok();
    assert!(
        r.stderr.contains("warning: location b lags") && r.stderr.contains("1 of 2 locations"),
        "{r}"
    );
    let j = r.json();
    assert_eq!(location(&j, "a")["complete"], true);
    assert_eq!(location(&j, "b")["complete"], false, "{j}");
    assert!(location(&j, "b")["pending"].as_u64().unwrap() >= 3, "{j}");
    let journal = t.journal();
    assert_eq!(journal.len(), 1, "one lag record");
    let locs = t.run(&["--json", "locations"]).json();
    let b = locs.as_array().unwrap().iter().find(|l| l["name"] == "b").unwrap();
    assert_eq!(b["reachable"], false, "{b}");

    // Back, but inside the back-off: the next call leaves it alone (no timeout per call)…
    std::fs::rename(&away, &t.b).unwrap();
    let (s3, c3) = t.segment(3);
    let j = t.push(&s3).ok().json();
    assert_eq!(location(&j, "b")["complete"], false, "{j}");
    assert!(!t.has(&t.b, &s3), "not written while it catches up later");
    // The WAL lag is visible per location.
    let locs = t.run(&["--json", "locations"]).json();
    let b = locs.as_array().unwrap().iter().find(|l| l["name"] == "b").unwrap();
    assert_eq!(b["wal"][0]["newest"], s1.as_str(), "{b}");
    assert_eq!(b["wal"][0]["lag_names"], 2, "{b}");
    // The health check warns (level high, exit 20) once the lag is older than warn_lag.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let h = t.run(&["health"]);
    h.expect_code(20);
    assert!(h.stdout.contains("b misses 2 WAL file(s)"), "{h}");
    // …and once the attempt is due, the next call copies exactly what it missed, then writes.
    let rec = &journal[0];
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
    v["next_try"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(rec, serde_json::to_vec(&v).unwrap()).unwrap();
    let (s4, c4) = t.segment(4);
    let j = t.push(&s4).ok().json();
    assert_eq!(location(&j, "b")["complete"], true, "{j}");
    assert!(location(&j, "b")["caught_up"].as_u64().unwrap() >= 6, "{j}");
    assert!(t.journal().is_empty(), "no lag left");
    for s in [&s1, &s2, &s3, &s4] {
        assert!(t.has(&t.b, s), "{s} in b");
    }
    t.run(&["check", "--location", "b", "--read-data"]).ok();
    let locs = t.run(&["--json", "locations"]).json();
    let b = locs.as_array().unwrap().iter().find(|l| l["name"] == "b").unwrap();
    assert_eq!(b["wal"][0]["lag_names"], 0, "{b}");
    t.run(&["health"]).ok();

    // The first region is lost entirely: restore_command reads every segment from the second.
    std::fs::remove_dir_all(&t.a).unwrap();
    for (s, c) in [(&s1, &c1), (&s2, &c2), (&s3, &c3), (&s4, &c4)] {
        t.fetch(s, c);
    }
}

#[test]
fn wal_min_locations_two_fails_while_a_location_is_down_then_catches_up() {
    let t = Two::new("wal_min_locations = 2");
    let (s1, _) = t.segment(1);
    t.push(&s1).ok();
    let away = t.env.path("region-b-away");
    std::fs::rename(&t.b, &away).unwrap();
    let (s2, _) = t.segment(2);
    t.push(&s2)
        .expect_code(25)
        .one_line_error(&["1 of 2 locations", "wal_min_locations = 2", "b:"]);
    // PostgreSQL retries: the segment is in the first location, but the answer stays no.
    assert!(t.has(&t.a, &s2));
    t.push(&s2).expect_code(25);
    // Back: the retry catches the location up first (a strict setup does not wait for the
    // back-off) and succeeds.
    std::fs::rename(&away, &t.b).unwrap();
    let j = t.push(&s2).ok().json();
    assert!(t.has(&t.b, &s2));
    assert!(t.journal().is_empty(), "{j}");
    // A flag overrides the config (1: acknowledged once durable in the first location).
    std::fs::rename(&t.b, &away).unwrap();
    let (s3, _) = t.segment(3);
    let seg = format!("pg_wal/{s3}");
    t.run(&[
        "wal",
        "push",
        &seg,
        "--data-dir",
        t.data.to_str().unwrap(),
        "--min-locations",
        "1",
    ])
    .ok();
    t.run(&[
        "wal",
        "push",
        &seg,
        "--data-dir",
        t.data.to_str().unwrap(),
        "--min-locations",
        "3",
    ])
    .expect_code(2)
    .one_line_error(&["min-locations", "2 location(s)"]);
}

/// The first region down: segments go to the second, the first is journalled, and once it is
/// back (and its attempt due) it is caught up before the next segment is written to it.
#[test]
fn the_first_location_down_then_back_is_caught_up() {
    let t = Two::new("");
    let (s1, _) = t.segment(1);
    t.push(&s1).ok();
    let away = t.env.path("region-a-away");
    std::fs::rename(&t.a, &away).unwrap();
    let (s2, _) = t.segment(2);
    let j = t.push(&s2).ok().json();
    assert_eq!(location(&j, "b")["primary"], true, "{j}");
    assert_eq!(location(&j, "a")["complete"], false, "{j}");
    assert!(t.has(&t.b, &s2));
    std::fs::rename(&away, &t.a).unwrap();
    let rec = t.journal().remove(0);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    assert_eq!(v["location"], "a");
    v["next_try"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&rec, serde_json::to_vec(&v).unwrap()).unwrap();
    let (s3, _) = t.segment(3);
    let j = t.push(&s3).ok().json();
    assert_eq!(location(&j, "a")["primary"], true, "{j}");
    assert_eq!(location(&j, "a")["complete"], true, "{j}");
    for s in [&s1, &s2, &s3] {
        assert!(t.has(&t.a, s) && t.has(&t.b, s), "{s} in both");
    }
    t.run(&["check", "--location", "a", "--read-data"]).ok();
}

/// A backlog handed to the background pusher is mirrored too: every call answered by its
/// marker finds its segment in both locations.
#[test]
fn the_background_pusher_writes_both_locations() {
    let t = Two::new("");
    let names: Vec<String> = (1..=5).map(|i| t.segment(i).0).collect();
    for n in &names {
        let seg = format!("pg_wal/{n}");
        t.run(&[
            "wal",
            "push",
            &seg,
            "--data-dir",
            t.data.to_str().unwrap(),
            "--background",
        ])
        .ok();
        let st = t.data.join("pg_wal/archive_status");
        std::fs::rename(st.join(format!("{n}.ready")), st.join(format!("{n}.done"))).unwrap();
    }
    for n in &names {
        assert!(t.has(&t.a, n) && t.has(&t.b, n), "{n} in both");
    }
    assert!(t.journal().is_empty());
    t.run(&["check", "--location", "b", "--read-data"]).ok();
}

/// The second region on a real S3 server (moto) with Object Lock: every segment arrives there in
/// the same call, locked like any other write to that bucket; with the server cut off, the call
/// still succeeds and the lag is caught up once it is back.
#[test]
fn s3_second_location_gets_each_segment_locked_and_is_caught_up_after_an_outage() {
    let Some(()) = s3_tests_enabled() else { return };
    if moto_only("Garage has no S3 Object Lock") {
        return;
    }
    let m = Moto::shared();
    let bucket = m.lock_bucket("walmirror", None);
    let proxy = Proxy::start(m.port);
    let t = Two::with_b(
        "",
        "",
        Some(format!(
            "url = \"s3://{bucket}/lifeboat\"\nregion = \"us-west-2\"\nendpoint = \"{}\"\nmax_retries = 1\nretry_timeout = \"3s\"\nobject_lock = true",
            proxy.endpoint()
        )),
    );
    let (s1, c1) = t.segment(1);
    let j = t.push(&s1).ok().json();
    assert_eq!(location(&j, "b")["complete"], true, "{j}");
    let key = format!("lifeboat/named/wal-{SYSID}/{s1}");
    assert!(m.keys(&bucket, "lifeboat/named/").contains(&key));
    let (mode, until) = m.retention(&bucket, &key).expect("the mirrored manifest is locked");
    assert!(mode.eq_ignore_ascii_case("GOVERNANCE"), "{mode}");
    assert!(
        until > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 7),
        "{until}"
    );
    for pack in m.keys(&bucket, "lifeboat/data/") {
        assert!(m.retention(&bucket, &pack).is_some(), "{pack} locked");
    }

    proxy.cut();
    let (s2, c2) = t.segment(2);
    let r = t.push(&s2);
    r.ok();
    assert!(r.stderr.contains("warning: location b lags"), "{r}");
    proxy.restore();
    let rec = t.journal().remove(0);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    v["next_try"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&rec, serde_json::to_vec(&v).unwrap()).unwrap();
    let (s3, c3) = t.segment(3);
    let j = t.push(&s3).ok().json();
    assert_eq!(location(&j, "b")["complete"], true, "{j}");
    let named = m.keys(&bucket, "lifeboat/named/");
    for s in [&s1, &s2, &s3] {
        let k = format!("lifeboat/named/wal-{SYSID}/{s}");
        assert!(named.contains(&k), "{k} in {named:?}");
        assert!(m.retention(&bucket, &k).is_some(), "{k} locked");
    }
    t.run(&["check", "--location", "b", "--read-data"]).ok();
    std::fs::remove_dir_all(&t.a).unwrap();
    for (s, c) in [(&s1, &c1), (&s2, &c2), (&s3, &c3)] {
        t.fetch(s, c);
    }
}

/// A location that already holds a *different* segment under a name being written (a history
/// that forked, another cluster's WAL) is never overwritten and never counted as holding ours:
/// it lags with the conflict as the reason, both when the segment is mirrored in the call and
/// when a later call catches the location up.
#[test]
fn a_location_holding_a_different_segment_under_the_name_lags_as_a_conflict() {
    let t = Two::new("");
    let (s1, _) = t.segment(1);
    t.push(&s1).ok();
    // The first region away: the second stores its own version of segment 2 …
    let away = t.env.path("region-a-away");
    std::fs::rename(&t.a, &away).unwrap();
    let name = format!("0000000100000000000000{:02X}", 2);
    std::fs::write(t.data.join("pg_wal").join(&name), random_bytes(1 << 20, 9_999)).unwrap();
    std::fs::write(t.data.join(format!("pg_wal/archive_status/{name}.ready")), b"").unwrap();
    t.push(&name).ok();
    let theirs = std::fs::read(t.b.join(format!("named/wal-{SYSID}/{name}"))).unwrap();
    // … and the journal of that is lost (a call killed before writing it).
    for r in t.journal() {
        std::fs::remove_file(r).unwrap();
    }
    std::fs::rename(&away, &t.a).unwrap();
    // Another segment 2: the first region stores it, the second holds a different one.
    let (s2, _) = t.segment(2);
    assert_eq!(s2, name);
    let r = t.push(&s2);
    r.ok();
    assert!(r.stderr.contains("warning: location b lags"), "{r}");
    assert!(r.stderr.contains("different object under this name"), "{r}");
    assert_eq!(location(&r.json(), "b")["complete"], false, "{r}");
    let bytes = std::fs::read(t.b.join(format!("named/wal-{SYSID}/{name}"))).unwrap();
    assert!(bytes == theirs, "nothing overwritten in b");
    // The catch-up meets the same conflict and keeps the location lagging, with the reason.
    let rec = t.journal().remove(0);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    assert_eq!(v["location"], "b", "{v}");
    v["next_try"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&rec, serde_json::to_vec(&v).unwrap()).unwrap();
    let (s3, _) = t.segment(3);
    let r = t.push(&s3);
    r.ok();
    assert_eq!(location(&r.json(), "b")["complete"], false, "{r}");
    assert!(r.stderr.contains("different stream under this name"), "{r}");
    let bytes = std::fs::read(t.b.join(format!("named/wal-{SYSID}/{name}"))).unwrap();
    assert!(bytes == theirs, "nothing overwritten in b by the catch-up");
    // `locations` sees the missing name; the journal on this host keeps the reason.
    let locs = t.run(&["--json", "locations"]).json();
    let b = locs.as_array().unwrap().iter().find(|l| l["name"] == "b").unwrap();
    assert_eq!(b["wal"][0]["lag_names"], 1, "{b}");
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(t.journal().remove(0)).unwrap()).unwrap();
    assert!(rec.to_string().contains("conflict"), "{rec}");
}
