//! A real PostgreSQL archiving (archive_command) and streaming (`wal stream`) into a repository
//! kept in two locations (two folders standing for two regions). The first location is then
//! destroyed with the database: the restore from the second alone has every committed row.
//! Skipped (with a message) when the PostgreSQL server programs are not installed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use lifeboat_pg::{ClusterOptions, ScratchCluster};

use crate::pg_physical::PgEnv;

/// The scratch environment, with the repository in two folders named by its config.
struct Env {
    pg: PgEnv,
    a: PathBuf,
    b: PathBuf,
}

impl std::ops::Deref for Env {
    type Target = PgEnv;
    fn deref(&self) -> &PgEnv {
        &self.pg
    }
}

impl Env {
    fn new() -> Option<Env> {
        let pg = PgEnv::with_config("lifeboat-pgloc-", "lifeboat.toml")?;
        let (a, b) = (pg.root.join("region-a"), pg.root.join("region-b"));
        std::fs::create_dir(&b).unwrap();
        Some(Env { pg, a, b })
    }

    fn write_config(&self, url: &str) {
        std::fs::write(
            self.root.join("lifeboat.toml"),
            format!(
                "[repository]\nlocations = [\"a\", \"b\"]\n\n[locations.a]\nurl = \"{}\"\n\n[locations.b]\nurl = \"{}\"\n\n[sources.db]\nkind = \"postgres\"\nurl = \"{url}\"\nmode = \"physical\"\ndatabases = \"all\"\n",
                self.a.display(),
                self.b.display()
            ),
        )
        .unwrap();
        self.give(&self.root);
    }

    fn cluster(&self) -> ScratchCluster {
        let opts = ClusterOptions {
            settings: vec![
                ("wal_level".into(), "replica".into()),
                ("archive_mode".into(), "on".into()),
                ("archive_command".into(), self.archive_command()),
                ("archive_timeout".into(), "0".into()),
            ],
            ..Default::default()
        };
        let mut c = ScratchCluster::create(&self.tools, &opts).unwrap();
        c.start().unwrap();
        c
    }
}

fn wal_names(loc: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(loc.join("named"))
        .map(|rd| {
            rd.flatten()
                .filter(|ns| ns.file_name().to_string_lossy().starts_with(prefix))
                .flat_map(|ns| std::fs::read_dir(ns.path()).unwrap().flatten())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn archive_and_stream_into_two_locations_then_restore_from_the_second_alone() {
    let Some(env) = Env::new() else { return };
    // The config names the cluster, which needs the config to archive: write it with a
    // placeholder URL, start the cluster, then rewrite it with the cluster's URL.
    env.write_config("postgres://localhost/postgres");
    env.lifeboat(&["init"]).ok();
    let src = env.cluster();
    env.write_config(&src.url("postgres"));
    let db = src.client("postgres").unwrap();
    db.execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000);")
        .unwrap();
    env.lifeboat(&["backup", "db"]).ok();

    let mut stream = env
        .cmd(&["wal", "stream", "--interval", "300ms", "--duration", "60s"])
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
    // Archived segments (archive_command), then rows only the stream's partial upload holds.
    for i in 0..3 {
        db.execute(&format!("INSERT INTO t SELECT generate_series(1, 1000); -- {i}"))
            .unwrap();
        db.query("SELECT pg_switch_wal()").unwrap();
    }
    src.wait_for("archiving", Duration::from_secs(60), || {
        db.query_value("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
            .ok()
            .flatten()
            .as_deref()
            == Some("0")
    })
    .unwrap();
    db.execute("INSERT INTO t VALUES (-1)").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let expected = db.query_value("SELECT count(*) FROM t").unwrap().unwrap();
    let data_dir = src.data_dir().to_path_buf();
    let mut src = src;
    src.crash().unwrap();
    let _ = stream.kill();
    let _ = stream.wait();

    // Both locations got every archived segment and the stream's partial upload.
    let (wa, wb) = (wal_names(&env.a, "wal-"), wal_names(&env.b, "wal-"));
    assert!(wa.len() >= 4, "{wa:?}");
    assert_eq!(wa, wb, "the second location holds every archived segment");
    assert!(!wal_names(&env.b, "walpartial-").is_empty(), "partial upload mirrored");

    // Region a and the database are lost.
    std::fs::remove_dir_all(&env.a).unwrap();
    std::fs::remove_dir_all(&data_dir).unwrap();
    let port = lifeboat_pg::cluster::free_port().unwrap();
    let sock = env.root.join("sock");
    std::fs::create_dir(&sock).unwrap();
    if let Some(r) = env.run_as {
        r.chown_tree(&sock).unwrap();
    }
    let restored = env.root.join("restored");
    let port_s = port.to_string();
    let run = env.lifeboat(&[
        "restore",
        "db",
        "latest",
        "--data-dir",
        restored.to_str().unwrap(),
        "--start",
        "--port",
        &port_s,
        "--socket-dir",
        sock.to_str().unwrap(),
        "--start-timeout",
        "120s",
    ]);
    let attached = ScratchCluster::attach_running(&env.tools, &restored, port).unwrap();
    run.ok();
    attached
        .wait_for("the restored server to answer", Duration::from_secs(60), || {
            attached.client("postgres").is_ok()
        })
        .unwrap();
    let got = attached
        .client("postgres")
        .unwrap()
        .query_value("SELECT count(*) FROM t")
        .unwrap()
        .unwrap();
    assert_eq!(got, expected, "every committed row, from the second location alone");
}
