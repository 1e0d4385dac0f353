//! The runner: dependency suppression, timeouts that bound the total, 50 checks at once, the
//! JSON schema, bad input, and the `backup` kind through its trait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_health::{Context, History, Level, NewestSnapshot, Report, SnapshotAges, Status, changes};

use crate::support::{closed_port, http_server, result, run, run_with, try_checks};

#[test]
fn failing_dependency_suppresses_dependents() {
    let port = http_server();
    let closed = closed_port();
    let r = run(&format!(
        "[[checks]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{closed}\"\n\
         [[checks]]\nname = \"api\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/fail\"\ndepends_on = [\"db\"]\n\
         [[checks]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/fail\"\ndepends_on = [\"api\"]\n\
         [[checks]]\nname = \"static\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/ok\"\ndepends_on = [\"db\"]\n\
         [[checks]]\nname = \"other\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/fail\"\nlevels = {{ down = \"high\" }}\n"
    ));
    let db = result(&r, "db");
    assert_eq!((db.status, db.level), (Status::Fail, Some(Level::Critical)));
    for name in ["api", "web"] {
        let c = result(&r, name);
        assert_eq!((c.status, c.level), (Status::Suppressed, None), "{c:?}");
        assert!(c.detail.starts_with("suppressed: depends on"), "{c:?}");
        assert!(c.detail.contains("status 503"), "own result kept: {c:?}");
    }
    assert_eq!(result(&r, "api").suppressed_by, ["db"]);
    assert_eq!(result(&r, "web").suppressed_by, ["api"]);
    assert_eq!(result(&r, "static").status, Status::Ok);
    assert_eq!(result(&r, "other").level, Some(Level::High));
    assert_eq!((r.counts.fail, r.counts.suppressed, r.counts.ok), (2, 2, 1));
    assert_eq!(
        r.verdict,
        "CRITICAL: 2 of 5 checks failing (db critical, other high); 2 suppressed behind failing dependencies"
    );
}

#[test]
fn timeouts_bound_the_total() {
    let port = http_server();
    let hang = |name: &str, timeout: &str| {
        format!(
            "[[checks]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/hang\"\ntimeout = \"{timeout}\"\n"
        )
    };
    // Own timeouts: each hanging check ends at its own limit, concurrently.
    let t0 = Instant::now();
    let r = run(&[hang("a", "300ms"), hang("b", "600ms"), hang("c", "600ms")].concat());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(result(&r, "a").detail.contains("timed out after 300ms"));
    // The global timeout cuts checks whose own limit is longer.
    let t0 = Instant::now();
    let r = run_with(
        &[hang("x", "60s"), hang("y", "60s"), hang("z", "200ms")].concat(),
        Duration::from_millis(700),
        Context::default(),
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        result(&r, "x").detail.contains("stopped by the global timeout (700ms)"),
        "{:?}",
        result(&r, "x")
    );
    assert!(result(&r, "z").detail.contains("timed out after 200ms"));
    assert!(r.duration_ms < 3000.0);
}

#[test]
fn fifty_checks_well_under_a_second() {
    let port = http_server();
    let mut text = String::new();
    for i in 0..25 {
        text.push_str(&format!(
            "[[checks]]\nname = \"h{i}\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/ok\"\n"
        ));
        text.push_str(&format!(
            "[[checks]]\nname = \"t{i}\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n"
        ));
    }
    let specs = crate::support::checks(&text);
    assert_eq!(specs.len(), 50);
    let t0 = Instant::now();
    let r = lifeboat_health::run_blocking(&specs, &Default::default(), &Context::default()).unwrap();
    let took = t0.elapsed();
    eprintln!(
        "50 checks (25 http + 25 tcp, local): {took:?} wall, report says {:.1} ms",
        r.duration_ms
    );
    assert_eq!(r.counts.ok, 50, "{r:#?}");
    // Generous for a loaded two-core machine; the measured figure is printed above.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// Replaces what changes from run to run (times, ports, latencies) so the schema can be
/// compared with the checked-in file.
fn normalise(r: &Report, port: u16, closed: u16) -> serde_json::Value {
    let text = serde_json::to_string_pretty(r)
        .unwrap()
        .replace(&port.to_string(), "PORT")
        .replace(&closed.to_string(), "CLOSED");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["started_at"] = "TIME".into();
    v["duration_ms"] = 0.into();
    for c in v["checks"].as_array_mut().unwrap() {
        if !c["latency_ms"].is_null() {
            c["latency_ms"] = 0.into();
        }
    }
    v
}

#[test]
fn json_schema_snapshot() {
    let port = http_server();
    let closed = closed_port();
    let r = run(&format!(
        "[[checks]]\nname = \"api\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/ok\"\n\
         [[checks]]\nname = \"legacy\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/fail\"\nlevels = {{ down = \"urgent\" }}\n\
         [[checks]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{closed}\"\n\
         [[checks]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/fail\"\ndepends_on = [\"db\"]\n\
         [[checks]]\nname = \"queue\"\nkind = \"command\"\ncommand = \"echo 3 stuck jobs >&2; exit 1\"\nlevels = {{ down = \"high\" }}\n"
    ));
    let got = normalise(&r, port, closed);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/health/expected/report.json");
    let pretty = serde_json::to_string_pretty(&got).unwrap() + "\n";
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, &pretty).unwrap();
    }
    let want = std::fs::read_to_string(&path).expect("expected/report.json (UPDATE_EXPECT=1 to write)");
    assert_eq!(
        pretty, want,
        "JSON report changed; if on purpose, bump SCHEMA_VERSION when a field changes meaning and rerun with UPDATE_EXPECT=1"
    );
    // And it reads back.
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn bad_input_is_a_clear_error() {
    let cases = [
        ("[[checks]]\nname = \"a\"\nkind = \"ftp\"\n", "unknown kind \"ftp\""),
        (
            "[[checks]]\nname = \"a\"\nkind = \"http\"\nurl = \"not a url\"\n",
            "malformed URL",
        ),
        (
            "[[checks]]\nname = \"a\"\nkind = \"http\"\nurl = \"ftp://x/\"\n",
            "must start with http",
        ),
        (
            "[[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"h:99999\"\n",
            "port \"99999\"",
        ),
        (
            "[[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"h:1\"\n[[checks]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"h:1\"\n",
            "duplicate check name",
        ),
        (
            "[[checks]]\nname = \"a\"\nkind = \"memory\"\ndepends_on = [\"a\"]\n",
            "depends on itself",
        ),
        (
            "[[checks]]\nname = \"a\"\nkind = \"memory\"\ndepends_on = [\"b\"]\n[[checks]]\nname = \"b\"\nkind = \"memory\"\ndepends_on = [\"a\"]\n",
            "dependency cycle a -> b -> a",
        ),
        ("[[checks]]\nkind = \"memory\"\n", "missing required key \"name\""),
        (
            "[[checks]]\nname = \"a b\"\nkind = \"memory\"\n",
            "must be 1-64 letters",
        ),
        (
            "[[checks]]\nname = \"a\"\nkind = \"memory\"\ntimeout = \"soon\"\n",
            "invalid duration",
        ),
        (
            "[[checks]]\nname = \"a\"\nkind = \"disk\"\npath = \"rel\"\n",
            "not absolute",
        ),
        (
            "[[checks]]\nname = \"a\"\nkind = \"command\"\ncommand = []\n",
            "command must be",
        ),
        (
            "[[checks]]\nname = \"a\"\nkind = \"dns\"\nname_to_resolve = \"x\"\nexpect = [\"1.2.3\"]\n",
            "not an IP address",
        ),
    ];
    for (text, needle) in cases {
        let e = try_checks(text).expect_err(text);
        assert!(e.message.contains(needle), "{text}: {e}");
        assert!(e.span.is_some(), "{text}: no position");
    }
    // An unreachable host is valid config: it is the check that reports it.
    let r =
        run("[[checks]]\nname = \"far\"\nkind = \"tcp\"\naddress = \"no-such-host.invalid:80\"\ntimeout = \"3s\"\n");
    let far = result(&r, "far");
    assert_eq!((far.status, far.level), (Status::Fail, Some(Level::Critical)));
    assert!(
        far.detail.contains("cannot connect to no-such-host.invalid:80"),
        "{far:?}"
    );
}

struct Fixed(Result<Option<NewestSnapshot>, String>);

impl SnapshotAges for Fixed {
    fn newest(&self, _source: Option<&str>) -> Result<Option<NewestSnapshot>, String> {
        self.0.clone()
    }
}

fn snap(time: jiff::Timestamp) -> Option<NewestSnapshot> {
    Some(NewestSnapshot { time, unreadable: 0 })
}

#[test]
fn backup_age_against_the_rpo() {
    let text = "[[checks]]\nname = \"b\"\nkind = \"backup\"\nsource = \"db\"\nrpo = \"1h\"\n";
    let with = |v: Result<Option<NewestSnapshot>, String>| {
        let ctx = Context {
            snapshots: Some(Arc::new(Fixed(v))),
            wal_copies: None,
            history: None,
        };
        run_with(text, Duration::from_secs(10), ctx)
    };
    let now = jiff::Timestamp::now();
    let fresh = with(Ok(snap(now - jiff::SignedDuration::from_mins(10))));
    assert_eq!(result(&fresh, "b").status, Status::Ok, "{:?}", result(&fresh, "b"));
    let stale = with(Ok(snap(now - jiff::SignedDuration::from_hours(3))));
    let s = result(&stale, "b");
    assert_eq!(
        (s.status, s.level, s.class.as_deref()),
        (Status::Fail, Some(Level::High), Some("stale"))
    );
    assert!(s.detail.contains("older than the RPO of 1h00m"), "{s:?}");
    let partial = with(Ok(Some(NewestSnapshot {
        time: now,
        unreadable: 3,
    })));
    let p = result(&partial, "b");
    assert_eq!(
        (p.status, p.level, p.class.as_deref()),
        (Status::Fail, Some(Level::High), Some("failed"))
    );
    assert!(p.detail.contains("is partial: 3 file(s) could not be read"), "{p:?}");
    let none = with(Ok(None));
    assert!(result(&none, "b").detail.contains("no snapshot of source \"db\" yet"));
    let broken = with(Err("no repository at /x".into()));
    assert_eq!(result(&broken, "b").class.as_deref(), Some("down"));
    let unconfigured = run(text);
    assert!(result(&unconfigured, "b").detail.contains("no repository configured"));
}

#[test]
fn watch_changes_only() {
    let port = http_server();
    let a = run(&format!(
        "[[checks]]\nname = \"x\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/ok\"\n"
    ));
    let b = run(&format!(
        "[[checks]]\nname = \"x\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/ok\"\n"
    ));
    let c = run(&format!(
        "[[checks]]\nname = \"x\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/fail\"\n"
    ));
    assert_eq!(changes(None, &a).len(), 1);
    assert!(changes(Some(&a), &b).is_empty());
    let ch = changes(Some(&b), &c);
    assert_eq!(ch.len(), 1);
    assert_eq!((ch[0].from_status, ch[0].now.status), (Some(Status::Ok), Status::Fail));
}

#[test]
fn error_rate_over_another_checks_failures() {
    let port = http_server();
    let text = |path: &str| {
        format!(
            "[[checks]]\nname = \"api\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}{path}\"\nlevels = {{ down = \"high\" }}\n\
             [[checks]]\nname = \"api-errors\"\nkind = \"error_rate\"\nof_check = \"api\"\nwindow = \"5m\"\nmax_rate = \"50%\"\n"
        )
    };
    let ctx = Context {
        snapshots: None,
        wal_copies: None,
        history: Some(Arc::new(History::new())),
    };
    let go = |path: &str| run_with(&text(path), Duration::from_secs(10), ctx.clone());
    let r = go("/ok");
    assert_eq!(
        result(&r, "api-errors").detail,
        "api failed 0 of 1 run(s) in the last 5m00s (0.0%)"
    );
    let r = go("/fail");
    // 1 of 2: at the limit, not above.
    assert_eq!(
        result(&r, "api-errors").status,
        Status::Ok,
        "{:?}",
        result(&r, "api-errors")
    );
    let r = go("/fail");
    let e = result(&r, "api-errors");
    assert_eq!(
        (e.status, e.level, e.class.as_deref()),
        (Status::Fail, Some(Level::Urgent), Some("errors")),
        "{e:?}"
    );
    assert!(
        e.detail.contains("api failed 2 of 3 run(s)") && e.detail.contains("above 50.0%"),
        "{e:?}"
    );
    assert_eq!(e.target, "failures of api over 5m00s");
    // Without history, one run is one sample.
    let single = run(&text("/ok"));
    assert_eq!(result(&single, "api-errors").status, Status::Ok);
    // Config mistakes.
    let e = try_checks("[[checks]]\nname = \"e\"\nkind = \"error_rate\"\nof_check = \"nope\"\n").unwrap_err();
    assert!(e.message.contains("of_check names unknown check \"nope\""), "{e}");
    let e = try_checks(
        "[[checks]]\nname = \"a\"\nkind = \"memory\"\n[[checks]]\nname = \"e\"\nkind = \"error_rate\"\nof_check = \"a\"\nquery = \"x\"\n",
    )
    .unwrap_err();
    assert!(e.message.contains("give one"), "{e}");
}

/// The published JSON Schema (docs/health-report.schema.json) and the report agree: every field
/// the report writes is described and required, every required field is written, and the enums
/// list every level, status, kind and failure class.
#[test]
fn published_schema_matches_the_report() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/health-report.schema.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let port = http_server();
    let r = run(&format!(
        "[[checks]]\nname = \"a\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/fail\"\n\
         [[checks]]\nname = \"b\"\nkind = \"memory\"\ndepends_on = [\"a\"]\nmax_used = \"0%\"\n"
    ));
    let v = serde_json::to_value(&r).unwrap();
    let keys = |o: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = o.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let strings = |a: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = a
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v), keys(&schema["properties"]));
    assert_eq!(keys(&v), strings(&schema["required"]));
    let check = &schema["$defs"]["check"];
    assert_eq!(keys(&v["checks"][0]), keys(&check["properties"]));
    assert_eq!(keys(&v["checks"][0]), strings(&check["required"]));
    assert_eq!(keys(&v["counts"]), strings(&schema["properties"]["counts"]["required"]));
    assert_eq!(
        schema["properties"]["schema_version"]["const"],
        lifeboat_health::SCHEMA_VERSION
    );
    // Every failure class of every kind is in the schema's enum.
    let classes: Vec<&str> = check["properties"]["class"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    let kinds: Vec<&str> = check["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    for kind in &kinds {
        let levels = lifeboat_health::default_levels(kind);
        assert!(!levels.is_empty(), "schema kind {kind} unknown to the engine");
        for (class, _) in levels {
            assert!(
                classes.contains(class),
                "class {class} of {kind} missing from the schema"
            );
        }
    }
    assert_eq!(r.checks[1].status, Status::Suppressed);
}
