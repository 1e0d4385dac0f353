//! Scratch clusters against the real server binaries.

use lifeboat_pg::{ClusterOptions, ConnectFailure, PgError, ScratchCluster, Tools};

fn tools() -> Option<Tools> {
    match Tools::find() {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

#[test]
fn create_start_query_and_clean_up() {
    let Some(tools) = tools() else { return };
    let opts = ClusterOptions {
        settings: vec![("wal_level".into(), "replica".into())],
        ..Default::default()
    };
    let mut c = ScratchCluster::create(&tools, &opts).unwrap();
    let root = c.root().to_path_buf();
    c.start().unwrap();
    let db = c.client("postgres").unwrap();
    assert_eq!(db.query_value("SHOW wal_level").unwrap().as_deref(), Some("replica"));
    db.execute("CREATE TABLE t (a int, b text); INSERT INTO t VALUES (1, 'x|y'), (2, NULL);")
        .unwrap();
    let rows = db.query("SELECT a, b FROM t ORDER BY a").unwrap();
    assert_eq!(
        rows,
        vec![vec![Some("1".into()), Some("x|y".into())], vec![Some("2".into()), None]]
    );
    let err = db.query("SELECT * FROM missing").unwrap_err();
    assert!(matches!(err, PgError::ToolFailed { .. }), "{err}");
    drop(c);
    assert!(!root.exists(), "folder removed on drop");
}

#[test]
fn connection_failures_are_classified() {
    let Some(tools) = tools() else { return };
    let opts = ClusterOptions {
        password: Some("right pass".into()),
        ..Default::default()
    };
    let mut c = ScratchCluster::create(&tools, &opts).unwrap();
    c.start().unwrap();
    c.client("postgres").expect("right password works");
    let wrong =
        lifeboat_pg::ConnInfo::parse(&format!("postgres://postgres:wrong@127.0.0.1:{}/postgres", c.port())).unwrap();
    let e = lifeboat_pg::Client::connect(&tools, &wrong).unwrap_err();
    assert!(
        matches!(
            e,
            PgError::Connect {
                kind: ConnectFailure::Authentication,
                ..
            }
        ),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong"), "no password in messages: {e}");
    let port = lifeboat_pg::cluster::free_port().unwrap();
    let nobody = lifeboat_pg::ConnInfo::parse(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).unwrap();
    let e = lifeboat_pg::Client::connect(&tools, &nobody).unwrap_err();
    assert!(
        matches!(
            e,
            PgError::Connect {
                kind: ConnectFailure::Unreachable,
                ..
            }
        ),
        "{e}"
    );
}
