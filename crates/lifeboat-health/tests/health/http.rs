//! `http` and `error_rate` against the local test server.

use std::time::{Duration, Instant};

use lifeboat_health::{Level, Status};

use crate::support::{http_server, result, run};

fn http_check(name: &str, port: u16, path: &str, extra: &str) -> String {
    format!("[[checks]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}{path}\"\n{extra}\n")
}

#[test]
fn healthy_endpoint_is_ok_with_latency() {
    let port = http_server();
    let r = run(&http_check(
        "api",
        port,
        "/ok",
        "expect_status = [200]\nbody_contains = '\"ok\"'",
    ));
    let c = result(&r, "api");
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert_eq!(c.level, None);
    assert!(c.latency_ms.is_some());
    assert_eq!(c.detail, "status 200");
    assert_eq!(r.worst_level, None);
}

#[test]
fn each_failure_mode_has_its_level() {
    let port = http_server();
    let text = [
        http_check("fail", port, "/fail", ""),
        http_check("body", port, "/wrong-body", "body_contains = '\"ok\"'"),
        http_check("close", port, "/close", ""),
        http_check("truncated", port, "/truncated", ""),
        http_check("slow", port, "/slow/700", "critical_latency = \"400ms\""),
        http_check(
            "sluggish",
            port,
            "/slow/300",
            "warn_latency = \"150ms\"\ncritical_latency = \"5s\"",
        ),
        http_check("hang", port, "/hang", "timeout = \"500ms\""),
        http_check("token", port, "/token", "headers = { X-Token = \"t0k\" }"),
        http_check("notoken", port, "/token", "expect_status = [200, 204]"),
        http_check("lenient", port, "/fail", "levels = { down = \"high\" }"),
        http_check("refused", crate::support::closed_port(), "/ok", ""),
    ]
    .concat();
    let t0 = Instant::now();
    let r = run(&text);
    let took = t0.elapsed();
    let expect = |name: &str, status: Status, level: Option<Level>, class: Option<&str>, needle: &str| {
        let c = result(&r, name);
        assert_eq!(
            (c.status, c.level, c.class.as_deref()),
            (status, level, class),
            "{name}: {c:?}"
        );
        assert!(c.detail.contains(needle), "{name}: {:?} lacks {needle:?}", c.detail);
        assert!(!c.detail.contains('\n'));
    };
    expect(
        "fail",
        Status::Fail,
        Some(Level::Critical),
        Some("down"),
        "status 503 (expected 2xx)",
    );
    expect(
        "body",
        Status::Fail,
        Some(Level::Critical),
        Some("down"),
        "does not contain",
    );
    expect(
        "close",
        Status::Fail,
        Some(Level::Critical),
        Some("down"),
        "request failed",
    );
    expect(
        "truncated",
        Status::Fail,
        Some(Level::Critical),
        Some("down"),
        "body failed",
    );
    expect("slow", Status::Fail, Some(Level::Urgent), Some("slow"), "limit 400ms");
    expect(
        "sluggish",
        Status::Fail,
        Some(Level::High),
        Some("degraded"),
        "target 150ms",
    );
    expect(
        "hang",
        Status::Fail,
        Some(Level::Critical),
        Some("down"),
        "timed out after 500ms",
    );
    expect("token", Status::Ok, None, None, "status 200");
    expect(
        "notoken",
        Status::Fail,
        Some(Level::Critical),
        Some("down"),
        "status 401 (expected 200 or 204)",
    );
    expect("lenient", Status::Fail, Some(Level::High), Some("down"), "503");
    expect(
        "refused",
        Status::Fail,
        Some(Level::Critical),
        Some("down"),
        "request failed",
    );
    assert_eq!(r.worst_level, Some(Level::Critical));
    // Concurrent: the slowest check (the 700 ms endpoint) bounds the run, not the sum.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn urls_in_output_carry_no_secrets() {
    let port = http_server();
    let r = run(&format!(
        "[[checks]]\nname = \"s\"\nkind = \"http\"\nurl = \"http://user:hunter2@127.0.0.1:{port}/fail?token=abc123\"\n"
    ));
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("hunter2") && !json.contains("abc123"), "{json}");
    assert_eq!(result(&r, "s").status, Status::Fail);
}

#[test]
fn error_rate_from_prometheus() {
    let port = http_server();
    let q = |name: &str, query: &str| {
        format!(
            "[[checks]]\nname = \"{name}\"\nkind = \"error_rate\"\nprometheus = \"http://127.0.0.1:{port}\"\nquery = \"{query}\"\n"
        )
    };
    let r = run(&[
        q("low", "0.02"),
        q("high", "0.25"),
        q("none", "empty"),
        q("broken", "error"),
        q("nan", "NaN"),
    ]
    .concat());
    assert_eq!(result(&r, "low").status, Status::Ok);
    let h = result(&r, "high");
    assert_eq!((h.status, h.level), (Status::Fail, Some(Level::Urgent)), "{h:?}");
    assert!(h.detail.contains("error rate 25.0% above 10.0%"), "{h:?}");
    assert_eq!(result(&r, "none").status, Status::Ok);
    assert_eq!(result(&r, "nan").status, Status::Ok);
    let b = result(&r, "broken");
    assert_eq!((b.status, b.level), (Status::Fail, Some(Level::High)), "{b:?}");
    assert!(b.detail.contains("parse error"), "{b:?}");
}
