//! Logical backups against real throwaway clusters: a pgbench load running during the backup,
//! restore, fingerprints equal.

use std::process::Stdio;
use std::sync::Arc;

use lifeboat_pg::logical::{self, BackupOptions, RestoreDumpOptions};
use lifeboat_pg::verify::{self, RestoreTestOptions, Scratch};
use lifeboat_pg::{ClusterOptions, ScratchCluster, Tools, fingerprint};
use lifeboat_repo::{InitOptions, Repository, crypto::KdfParams};

fn tools() -> Option<Tools> {
    match Tools::find() {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn repo(dir: &std::path::Path) -> Repository {
    let store: Arc<dyn lifeboat_repo::backend::Backend> =
        lifeboat_repo::backend::create(dir.to_str().unwrap()).unwrap();
    let opts = InitOptions {
        kdf: KdfParams::TESTING,
        ..Default::default()
    };
    Repository::init(store, b"pw", &opts).unwrap()
}

const SAMPLE: &str = "CREATE TABLE odd (id int, t text, f float8, ts timestamptz, b bytea, j jsonb);
INSERT INTO odd VALUES (1, NULL, 0.1, '2026-11-20 14:00+02', '\\x00ff', '{\"a\": [1, null]}'),
 (2, '', 1e300, NULL, NULL, 'null'), (3, 'x,y\"z', -0.0, 'infinity', '', '{}');
CREATE SCHEMA \"We ird\"; CREATE TABLE \"We ird\".\"Ta ble\" (x int); INSERT INTO \"We ird\".\"Ta ble\" SELECT generate_series(1, 1000);";

#[test]
fn backup_under_pgbench_load_restores_with_equal_fingerprints() {
    let Some(tools) = tools() else { return };
    let mut c = ScratchCluster::create(&tools, &ClusterOptions::default()).unwrap();
    c.start().unwrap();
    c.client("postgres").unwrap().execute("CREATE DATABASE app;").unwrap();
    let app = c.client("app").unwrap();
    app.execute(SAMPLE).unwrap();
    let conn = c.conn("app");
    let mut init = tools.command("pgbench").unwrap();
    init.args(["-i", "-s", "1", "-q"]).arg(c.url("app"));
    conn.apply_env(&mut init);
    assert!(
        init.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );

    let mut load = tools.command("pgbench").unwrap();
    load.args(["-c", "2", "-T", "6", "-n"]).arg(c.url("app"));
    conn.apply_env(&mut load);
    let mut load = load.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));

    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let opts = BackupOptions {
        databases: Some(vec!["app".into()]),
        source_name: Some("db".into()),
        ..Default::default()
    };
    let out = logical::backup(&repo, &tools, &c.conn("postgres"), &opts).unwrap();
    let history_at_backup = out.source.databases[0]
        .tables
        .iter()
        .find(|t| t.table == "pgbench_history")
        .unwrap()
        .rows;
    assert!(load.wait().unwrap().success());
    let history_now: u64 = app
        .query_value("SELECT count(*) FROM pgbench_history")
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        history_now > history_at_backup,
        "the load kept writing after the snapshot"
    );
    let fp = &out.source.databases[0].tables;
    assert_eq!(fp.len(), 6, "{fp:?}");
    assert!(fp.iter().any(|t| t.schema == "We ird" && t.rows == 1000));
    assert_eq!(out.result.snapshot.source_kind, "postgres-logical");

    // Restore into a new database on the same server: same fingerprints as at backup time.
    let admin = c.client("postgres").unwrap();
    assert_eq!(
        logical::database_state(&admin, "app_restored").unwrap(),
        logical::DatabaseState::Absent
    );
    logical::create_database(&admin, "app_restored").unwrap();
    assert_eq!(
        logical::database_state(&admin, "app_restored").unwrap(),
        logical::DatabaseState::Empty
    );
    let index = repo.load_index_for_reading().unwrap();
    let bytes = logical::restore_dump(
        &repo,
        &index,
        &out.result.snapshot.tree,
        &out.source.databases[0],
        &tools,
        &c.conn("app_restored"),
        &RestoreDumpOptions::default(),
    )
    .unwrap();
    assert_eq!(bytes, out.source.databases[0].bytes);
    let restored = fingerprint::compute(&tools, &c.conn("app_restored"), None).unwrap();
    assert_eq!(fingerprint::compare(fp, &restored), Vec::<String>::new());
    assert_eq!(
        logical::database_state(&admin, "app_restored").unwrap(),
        logical::DatabaseState::NotEmpty
    );
    // The live database moved on: its fingerprints differ from the backup's.
    let live = fingerprint::compute(&tools, &c.conn("app"), None).unwrap();
    assert!(!fingerprint::compare(fp, &live).is_empty());

    // Restore test in a throwaway cluster: fingerprints equal; one check passes, one fails.
    let ropts = RestoreTestOptions {
        scratch: Scratch::Throwaway,
        checks: vec![
            "SELECT count(*) = 100000 FROM pgbench_accounts".into(),
            "SELECT count(*) > 5 FROM odd".into(),
            "SELECT * FROM no_such_table".into(),
        ],
        check_database: None,
    };
    let r = verify::restore_test(&repo, &tools, out.result.snapshot_id, &out.result.snapshot, &ropts).unwrap();
    assert!(r.error.is_none(), "{:?}", r.error);
    assert!(r.databases[0].mismatches.is_empty(), "{:?}", r.databases);
    assert_eq!(
        r.checks.iter().map(|c| c.passed).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert!(r.checks[1].detail.contains("\"f\""), "{}", r.checks[1].detail);
    assert!(!r.passed);
    assert!(r.restore_bytes > 0 && r.restore_secs > 0.0);

    // The same test against a configured scratch server (this cluster): temporary databases,
    // dropped afterwards.
    let ropts = RestoreTestOptions {
        scratch: Scratch::Server(c.conn("postgres")),
        checks: vec!["SELECT count(*) = 100000 FROM pgbench_accounts".into()],
        check_database: None,
    };
    let r = verify::restore_test(&repo, &tools, out.result.snapshot_id, &out.result.snapshot, &ropts).unwrap();
    assert!(r.passed, "{r:?}");
    let left = admin
        .query_value("SELECT count(*) FROM pg_database WHERE datname LIKE 'lifeboat_verify%'")
        .unwrap();
    assert_eq!(left.as_deref(), Some("0"));
}

#[test]
fn forensic_backup_of_a_damaged_table_takes_the_rest() {
    let Some(tools) = tools() else { return };
    let mut c = ScratchCluster::create(&tools, &ClusterOptions::default()).unwrap();
    c.start().unwrap();
    let db = c.client("postgres").unwrap();
    db.execute(
        "CREATE TABLE good AS SELECT g AS id FROM generate_series(1, 100) g;
         CREATE TABLE bad AS SELECT g AS id, repeat('x', 50) AS pad FROM generate_series(1, 100) g;
         CHECKPOINT;",
    )
    .unwrap();
    let rel = db.query_value("SELECT pg_relation_filepath('bad')").unwrap().unwrap();
    c.stop().unwrap();
    // Wreck the page header of the table's first block: reading it fails ("invalid page").
    let path = c.data_dir().join(rel);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..24].fill(0xAB);
    std::fs::write(&path, bytes).unwrap();
    c.start().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let conn = c.conn("postgres");
    // A normal backup fails and commits nothing.
    let e = logical::backup(&repo, &tools, &conn, &BackupOptions::default()).unwrap_err();
    assert!(e.to_string().contains("invalid page"), "{e}");
    assert!(repo.list_snapshots().unwrap().is_empty());
    // A forensic one takes what it can and records what failed.
    let opts = BackupOptions {
        forensic: true,
        ..Default::default()
    };
    let out = logical::backup(&repo, &tools, &conn, &opts).unwrap();
    assert!(out.source.forensic);
    assert!(out.result.snapshot.tags.contains(&"forensic".to_string()));
    let d = out.source.databases.iter().find(|d| d.name == "postgres").unwrap();
    assert_eq!(d.failed_tables.len(), 1, "{d:?}");
    assert_eq!(d.failed_tables[0].0, "public.bad");
    assert!(d.failed_tables[0].1.contains("invalid page"), "{d:?}");
    assert!(d.dump_error.is_none(), "{d:?}");
    assert_eq!(
        d.tables.iter().map(|t| (t.table.as_str(), t.rows)).collect::<Vec<_>>(),
        [("good", 100)]
    );
}

#[test]
fn a_non_superuser_backup_role_works_without_role_passwords() {
    let Some(tools) = tools() else { return };
    let opts = ClusterOptions {
        password: Some("admin-pw".into()),
        ..Default::default()
    };
    let mut c = ScratchCluster::create(&tools, &opts).unwrap();
    c.start().unwrap();
    c.client("postgres")
        .unwrap()
        .execute(
            "CREATE ROLE backup LOGIN PASSWORD 'bk-pw';
             CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g;
             GRANT SELECT ON t TO backup;",
        )
        .unwrap();
    let conn =
        lifeboat_pg::ConnInfo::parse(&format!("postgres://backup:bk-pw@127.0.0.1:{}/postgres", c.port())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let out = logical::backup(&repo, &tools, &conn, &BackupOptions::default()).unwrap();
    assert!(!out.source.role_passwords);
    let d = out.source.databases.iter().find(|d| d.name == "postgres").unwrap();
    assert_eq!(d.tables[0].rows, 10);
    // The globals were dumped (roles without passwords) and restore into a throwaway cluster.
    let r = verify::restore_test(
        &repo,
        &tools,
        out.result.snapshot_id,
        &out.result.snapshot,
        &RestoreTestOptions {
            scratch: Scratch::Throwaway,
            checks: vec!["SELECT count(*) = 1 FROM pg_roles WHERE rolname = 'backup'".into()],
            check_database: None,
        },
    )
    .unwrap();
    assert!(r.passed, "{r:?}");
}

/// Database properties that cannot be honoured on the target never cost the restore: a missing
/// locale falls back to the "C" locale with the same encoding, a preload library the server
/// lacks (connections would fail with it) is removed again, a refused setting and a missing
/// owner are warnings; the database stays usable.
#[test]
fn database_properties_the_target_cannot_take_are_warnings() {
    use lifeboat_pg::db_properties::{self, DatabaseProperties};
    let Some(tools) = tools() else { return };
    let mut c = ScratchCluster::create(&tools, &ClusterOptions::default()).unwrap();
    c.start().unwrap();
    let admin = c.client("postgres").unwrap();
    let props = DatabaseProperties {
        encoding: "UTF8".into(),
        collate: "xx_NO.such-locale".into(),
        ctype: "xx_NO.such-locale".into(),
        provider: None,
        owner: "no_such_role".into(),
        settings: vec![
            "work_mem=8MB".into(),
            "search_path=\"\"".into(),
            "session_preload_libraries=lifeboat_no_such_library".into(),
        ],
        acl: None,
        connection_limit: None,
    };
    let w = db_properties::create(&admin, "odd_one", Some(&props)).unwrap().unwrap();
    assert!(w.contains("encoding UTF8 with the \"C\" locale"), "{w}");
    let row = admin
        .query("SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database WHERE datname = 'odd_one'")
        .unwrap();
    assert_eq!(row[0], vec![Some("UTF8".into()), Some("C".into())]);
    let w = db_properties::apply_settings(&admin, "odd_one", &props).unwrap();
    assert!(w.iter().any(|w| w.contains("removed again")), "{w:?}");
    let s = c.client("odd_one").unwrap();
    assert_eq!(s.query_value("SHOW work_mem").unwrap().as_deref(), Some("4MB"));
    // Without the library the other two settings stay.
    let fine = DatabaseProperties {
        settings: props.settings[..2].to_vec(),
        ..props.clone()
    };
    assert!(
        db_properties::apply_settings(&admin, "odd_one", &fine)
            .unwrap()
            .is_empty()
    );
    let s = c.client("odd_one").unwrap();
    assert_eq!(s.query_value("SHOW work_mem").unwrap().as_deref(), Some("8MB"));
    assert_eq!(s.query_value("SHOW search_path").unwrap().as_deref(), Some("\"\""));
    let w = db_properties::apply_owner(&admin, "odd_one", &props).unwrap().unwrap();
    assert!(w.contains("does not exist"), "{w}");
}
