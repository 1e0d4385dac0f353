//! `postgres` against a throwaway cluster: up, archiver failing, then stopped.

use std::time::{Duration, Instant};

use lifeboat_health::{Level, Status};

use crate::support::{PG_PASSWORD, Pg, result, run};

#[test]
fn up_then_archiver_failing_then_stopped() {
    let mut pg = Pg::start();
    let url = pg.url();
    let check = |name: &str, extra: &str| {
        format!("[[checks]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"{url}\"\n{extra}\n")
    };
    let text = [
        check("db", "query = \"SELECT 1\"\nmax_replication_lag = \"30s\""),
        check("badquery", "query = \"SELECT * FROM no_such_table\""),
        check("slowq", "query = \"SELECT pg_sleep(0.3)\"\nwarn_latency = \"50ms\"\ncritical_latency = \"200ms\""),
        format!(
            "[[checks]]\nname = \"badpw\"\nkind = \"postgres\"\nurl = \"postgres://postgres:wrong@127.0.0.1:{}/postgres\"\n",
            pg.port
        ),
    ]
    .concat();
    let r = run(&text);
    let db = result(&r, "db");
    assert_eq!(db.status, Status::Ok, "{db:?}");
    assert!(db.detail.contains("replication lag 0ms"), "{db:?}");
    assert!(db.latency_ms.is_some());
    let bq = result(&r, "badquery");
    assert_eq!((bq.status, bq.level), (Status::Fail, Some(Level::Critical)), "{bq:?}");
    assert!(bq.detail.contains("no_such_table"), "{bq:?}");
    let sq = result(&r, "slowq");
    assert_eq!(
        (sq.status, sq.level, sq.class.as_deref()),
        (Status::Fail, Some(Level::Urgent), Some("slow")),
        "{sq:?}"
    );
    let bp = result(&r, "badpw");
    assert_eq!(bp.status, Status::Fail, "{bp:?}");
    assert!(bp.detail.contains("password authentication failed"), "{bp:?}");
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains(PG_PASSWORD), "password leaked: {json}");

    // Make the archiver fail: write, switch WAL; archive_command is /bin/false.
    let switch = check(
        "switch",
        "query = \"CREATE TABLE IF NOT EXISTS t(x int); INSERT INTO t VALUES (1); SELECT pg_switch_wal()\"",
    );
    let _ = run(&switch);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run(&check("db", ""));
        let db = result(&r, "db");
        if db.status == Status::Fail {
            assert_eq!(
                (db.level, db.class.as_deref()),
                (Some(Level::High), Some("archiver")),
                "{db:?}"
            );
            assert!(db.detail.contains("WAL archiving is failing"), "{db:?}");
            break;
        }
        assert!(Instant::now() < deadline, "archiver never reported failing: {db:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Archiver check off: healthy again.
    assert_eq!(
        result(&run(&check("db", "check_archiver = false")), "db").status,
        Status::Ok
    );

    pg.stop();
    let r = run(&check("db", ""));
    let db = result(&r, "db");
    assert_eq!(
        (db.status, db.level, db.class.as_deref()),
        (Status::Fail, Some(Level::Critical), Some("down")),
        "{db:?}"
    );
    assert!(db.detail.contains("database unavailable"), "{db:?}");
    assert_eq!(r.verdict, "CRITICAL: 1 of 1 check failing (db critical)");
}

/// Fails unless the session is encrypted.
const MUST_BE_TLS: &str = "DO $$ BEGIN IF NOT (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) THEN RAISE EXCEPTION 'session not encrypted'; END IF; END $$";

#[test]
fn tls_unverified_verified_and_refused() {
    let pki = crate::support::Pki::new();
    let (cert, key) = pki.leaf_pem(&["localhost", "127.0.0.1"], crate::support::days(30));
    let pg = Pg::start_tls(&cert, &key);
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.ca_file(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let stranger = crate::support::Pki::new().ca_file(other_dir.path());
    let check = |name: &str, params: &str, extra: &str| {
        format!(
            "[[checks]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"postgres://postgres:{PG_PASSWORD}@127.0.0.1:{}/postgres{params}\"\nquery = \"{}\"\n{extra}\n",
            pg.port,
            MUST_BE_TLS.replace('"', "\\\"")
        )
    };
    let r = run(&[
        check("prefer", "", ""),
        check("require", "?sslmode=require", ""),
        check("verified", "", &format!("ca_file = \"{}\"", ca.display())),
        check("wrong_ca", "", &format!("ca_file = \"{}\"", stranger.display())),
        check("plain", "?sslmode=disable", ""),
    ]
    .concat());
    for ok in ["prefer", "require", "verified"] {
        assert_eq!(result(&r, ok).status, Status::Ok, "{:?}", result(&r, ok));
    }
    let w = result(&r, "wrong_ca");
    assert_eq!((w.status, w.level), (Status::Fail, Some(Level::Critical)), "{w:?}");
    assert!(
        w.detail.contains("database unavailable") && w.detail.to_lowercase().contains("certificate"),
        "{w:?}"
    );
    let p = result(&r, "plain");
    assert!(p.detail.contains("session not encrypted"), "{p:?}");
}

#[test]
fn replication_lag_on_primary_and_standby() {
    let primary = Pg::start();
    let standby = primary.standby();
    let check = |pg: &Pg, name: &str, extra: &str| {
        format!(
            "[[checks]]\nname = \"{name}\"\nkind = \"postgres\"\nurl = \"{}\"\ncheck_archiver = false\n{extra}\n",
            pg.url()
        )
    };
    let until_ok = |text: &str, name: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = run(text);
            if result(&r, name).status == Status::Ok {
                return;
            }
            assert!(Instant::now() < deadline, "{name} never passed: {:?}", result(&r, name));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Wait until the standby streams.
    until_ok(
        &check(
            &primary,
            "streaming",
            "query = \"DO $$ BEGIN IF (SELECT count(*) FROM pg_stat_replication) = 0 THEN RAISE EXCEPTION 'no standby'; END IF; END $$\"",
        ),
        "streaming",
    );
    let lag = "max_replication_lag = \"500ms\"";
    let r = run(&[check(&primary, "primary", lag), check(&standby, "standby", lag)].concat());
    for n in ["primary", "standby"] {
        let c = result(&r, n);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.detail.contains("replication lag"), "{c:?}");
    }
    // Pause replay on the standby, write on the primary: the standby falls behind.
    let r = run(&check(&standby, "pause", "query = \"SELECT pg_wal_replay_pause()\""));
    assert_eq!(result(&r, "pause").status, Status::Ok, "{:?}", result(&r, "pause"));
    run(&check(
        &primary,
        "write",
        "query = \"CREATE TABLE lagging(x int); INSERT INTO lagging VALUES (1)\"",
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run(&check(&standby, "standby", lag));
        let c = result(&r, "standby");
        if c.status == Status::Fail {
            assert_eq!(
                (c.level, c.class.as_deref()),
                (Some(Level::High), Some("replication_lag")),
                "{c:?}"
            );
            assert!(c.detail.contains("above 500ms"), "{c:?}");
            break;
        }
        assert!(Instant::now() < deadline, "standby never reported lag: {c:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(standby);
}
