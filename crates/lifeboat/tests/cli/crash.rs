//! kill -9 at arbitrary moments: during a backup (which must then resume, not start over) and
//! during a prune. After every kill the repository passes `check --read-data` and restores.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Env, Run, assert_same_tree, objects, restored, write_random};

/// Spawns the binary with stdout/stderr captured.
fn spawn(e: &Env, args: &[&OsStr]) -> Child {
    e.command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lifeboat")
}

/// Polls until `cond` holds or the child exits; true when `cond` held while it was running.
fn wait_for(child: &mut Child, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for lifeboat");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs the child (if still running); returns its output when it had finished by itself.
fn kill(mut child: Child, args: &[&OsStr]) -> Option<Run> {
    let finished = child.try_wait().expect("try_wait").is_some();
    if !finished {
        child.kill().expect("SIGKILL");
    }
    let out = child.wait_with_output().expect("wait");
    let r = Run::from_output(args, out);
    // It may also have exited on its own between `try_wait` and the signal (then SIGKILL hit a
    // zombie): its exit code tells which.
    if finished || r.code != -1 { Some(r) } else { None }
}

fn make_source(root: &Path, files: usize, seed: u64) -> u64 {
    let mut total = 0;
    for i in 0..files {
        // 0.5–2 MiB each, deterministic. Many files rather than a few big ones: the backup's
        // file queue must not swallow the whole source at once, or no checkpoint happens (see
        // `checkpoint_interval_is_honoured_with_few_large_files`).
        let size = (512 << 10) + ((seed + i as u64) * 2_654_435_761 % (3 << 19)) as usize;
        let dir = if i % 3 == 0 {
            root.join("sub")
        } else {
            root.to_path_buf()
        };
        write_random(&dir.join(format!("file-{i:03}.bin")), size, seed * 1000 + i as u64);
        total += size as u64;
    }
    total
}

#[test]
fn backup_killed_repeatedly_resumes_and_restores() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    let total = make_source(&src, 96, 1);
    let args_owned: Vec<PathBuf> = ["--json", "backup", "--checkpoint-interval", "50ms"]
        .iter()
        .map(PathBuf::from)
        .chain([src.clone()])
        .collect();
    let args: Vec<&OsStr> = args_owned.iter().map(|p| p.as_os_str()).collect();

    // Kill after a checkpoint landed (an index segment written and the completed files recorded
    // in the local resume file), with a different extra delay each round.
    let extra = [
        Duration::from_millis(0),
        Duration::from_millis(20),
        Duration::from_millis(60),
    ];
    let mut kills_after_checkpoint = 0;
    let mut finished: Option<Run> = None;
    for d in extra {
        let before = (objects(&e.repo, "index").len(), resume_bytes(&e.cache));
        let mut child = spawn(&e, &args);
        let checkpointed = wait_for(&mut child, Duration::from_secs(120), || {
            objects(&e.repo, "index").len() > before.0 && resume_bytes(&e.cache) > before.1
        });
        if checkpointed {
            std::thread::sleep(d);
        }
        match kill(child, &args) {
            Some(r) => {
                // Finished by itself before the kill: that run is the final one.
                r.ok();
                finished = Some(r);
                break;
            }
            None => {
                assert!(checkpointed);
                kills_after_checkpoint += 1;
            }
        }
        assert!(e.snapshot_ids().is_empty(), "a killed backup committed a snapshot");
        e.check_read_data_ok();
    }
    assert!(kills_after_checkpoint >= 1, "no backup was killed after a checkpoint");

    let r = match finished {
        Some(r) => r,
        None => {
            let r = e.run(&args);
            r.ok();
            r
        }
    };
    let j = r.json();
    let resumed = j["resumed_files"].as_u64().unwrap();
    let added = j["summary"]["bytes_added"].as_u64().unwrap();
    let read = j["summary"]["bytes_read"].as_u64().unwrap();
    assert!(
        resumed > 0,
        "the final backup did not resume the interrupted ones (resumed_files 0):\n{r}"
    );
    assert!(
        read < total && added < total * 9 / 10,
        "the final backup re-read or re-uploaded nearly everything (read {read}, added {added} of {total}):\n{r}"
    );

    assert_eq!(e.snapshot_ids().len(), 1);
    e.check_read_data_ok();
    let target = e.path("restore");
    e.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));
}

/// `--checkpoint-interval` promises an index checkpoint (and resume record) that often. The
/// walker only checkpoints when it hands the next file to the readers, so once every remaining
/// file fits in the file queue (readers × 8 jobs) no checkpoint happens any more: a backup of a
/// dozen large files never checkpoints, and a kill loses all of its work.
#[test]

fn checkpoint_interval_is_honoured_with_few_large_files() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    for i in 0..12u64 {
        write_random(&src.join(format!("big-{i}.bin")), 8 << 20, 500 + i);
    }
    let r = e.run(&[
        OsStr::new("--json"),
        OsStr::new("backup"),
        OsStr::new("--checkpoint-interval"),
        OsStr::new("20ms"),
        src.as_os_str(),
    ]);
    r.ok();
    let j = r.json();
    let secs = j["summary"]["duration_secs"].as_f64().unwrap();
    let checkpoints = j["checkpoints"].as_u64().unwrap();
    // All 12 files fit in the file queue at once: before the fix no checkpoint happened at all.
    assert!(
        checkpoints >= 2 && checkpoints as f64 >= (secs / 0.02) / 10.0,
        "{checkpoints} checkpoint(s) in a {secs:.2}s backup with --checkpoint-interval 20ms"
    );
}

/// Bytes in the local resume files (written at each checkpoint of a backup).
fn resume_bytes(cache: &Path) -> u64 {
    crate::common::all_files(cache)
        .into_iter()
        .filter(|(p, _)| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("resume-"))
        })
        .map(|(_, s)| s)
        .sum()
}

/// A repository with several snapshots of a changing folder, most of them forgotten.
fn repo_with_garbage(e: &Env, src: &Path, rounds: u64, seed: u64) {
    for i in 0..rounds {
        // A stable file (shared by every snapshot) and a changing one per round.
        write_random(&src.join("stable.bin"), 1 << 20, 42);
        if let Ok(rd) = std::fs::read_dir(src) {
            for f in rd.flatten() {
                if f.file_name().to_string_lossy().starts_with("var-") {
                    std::fs::remove_file(f.path()).unwrap();
                }
            }
        }
        write_random(
            &src.join(format!("var-{}.bin", seed * 100 + i)),
            2 << 20,
            seed * 100 + i,
        );
        write_random(&src.join(format!("small-{i}.txt")), 10_000 + i as usize, seed * 7 + i);
        e.backup(&[src]);
    }
    e.run(&["forget", "--keep-last", "1"]).ok();
}

#[test]
fn prune_killed_at_random_moments_never_loses_data() {
    let e = Env::with_repo(&["--pack-size-mib", "4"]);
    let src = e.path("src");
    repo_with_garbage(&e, &src, 4, 1);
    let prune: Vec<&OsStr> = [
        "prune",
        "--grace",
        "0s",
        "--unsafe-short-grace",
        "--repack-threshold",
        "0.1",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    let lease = e.repo.join("locks/prune");
    let mut lease_left = 0;
    // Kill moments after the lease appears (the prune has started working).
    let delays_ms = [0u64, 15, 40, 80, 150, 300];
    for (round, d) in delays_ms.iter().enumerate() {
        let mut child = spawn(&e, &prune);
        let started = wait_for(&mut child, Duration::from_secs(60), || lease.exists());
        if started {
            std::thread::sleep(Duration::from_millis(*d));
        }
        if let Some(r) = kill(child, &prune) {
            r.ok();
        }

        // The repository is intact and the kept snapshot restores exactly.
        e.check_read_data_ok();
        let target = e.path(&format!("restore-{round}"));
        e.restore("latest", &target);
        assert_same_tree(&src, &restored(&target, &src));

        if lease.exists() {
            lease_left += 1;
            // A killed prune leaves its lease: the next prune refuses until it expires (6 h).
            let r = e.run(&prune);
            r.expect_code(9).one_line_error(&["another prune holds the lease"]);
            // What an operator does after making sure no prune runs: remove the stale lease.
            std::fs::remove_file(&lease).unwrap();
        }
        // New garbage for the next round.
        repo_with_garbage(&e, &src, 2, 10 + round as u64);
    }
    assert!(lease_left > 0, "no prune was killed while holding its lease");

    // A complete prune (twice: mark, then delete) still leaves a sound repository.
    for _ in 0..2 {
        e.run(&prune).ok();
    }
    assert!(!lease.exists(), "a finished prune left its lease behind");
    e.check_read_data_ok();
    let target = e.path("restore-final");
    e.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));
}

/// The state a prune killed between deleting a marked pack and deleting its marks object leaves
/// behind, made deterministically: the repository has lost nothing a snapshot needs, so `check`
/// must pass.
#[test]

fn check_passes_when_a_marked_pack_is_already_deleted() {
    let e = Env::with_repo(&["--pack-size-mib", "4"]);
    let src = e.path("src");
    repo_with_garbage(&e, &src, 3, 3);
    // First prune: marks the packs only the forgotten snapshots used.
    e.run(&["prune", "--grace", "0s", "--unsafe-short-grace"]).ok();
    let repo = lifeboat_repo::Repository::open(
        lifeboat_repo::backend::open(e.repo.to_str().unwrap()).unwrap(),
        crate::common::PASSWORD.as_bytes(),
    )
    .unwrap();
    let marks = repo.load_marks().unwrap();
    let marked: Vec<_> = marks.iter().flat_map(|(_, m)| m.packs.iter().map(|p| p.id)).collect();
    assert!(!marked.is_empty(), "the prune marked nothing");
    // Delete one marked pack, as the second prune does just before removing the marks object.
    std::fs::remove_file(e.repo.join(lifeboat_repo::repository::pack_key(&marked[0]))).unwrap();
    e.check_read_data_ok();
    // And the next prune finishes the job.
    e.run(&["prune", "--grace", "0s", "--unsafe-short-grace"]).ok();
    e.check_read_data_ok();
}
