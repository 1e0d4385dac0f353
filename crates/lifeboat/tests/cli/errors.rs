//! Bad input: each mistake gets a one-line message naming what and where, and its own exit code
//! (crates/lifeboat/src/exit.rs). Nothing ever panics.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::common::{Env, assert_same_tree, is_root, restored, snapshot_of};

#[test]
fn wrong_passphrase_exits_4() {
    let e = Env::with_repo(&[]);
    let r = e.run_env(
        &["snapshots"],
        &[("LIFEBOAT_PASSWORD", OsStr::new("not the passphrase"))],
    );
    r.expect_code(4)
        .one_line_error(&["wrong passphrase", &e.repo.display().to_string()]);
}

#[test]
fn no_passphrase_at_all_exits_4() {
    let e = Env::with_repo(&[]);
    let mut c = e.command();
    c.env_remove("LIFEBOAT_PASSWORD").arg("snapshots");
    let r = crate::common::Run::from_output(&[], c.output().expect("run"));
    r.expect_code(4).one_line_error(&["passphrase"]);
}

#[test]
fn missing_repository_exits_7() {
    let e = Env::new();
    let r = e.run(&["snapshots"]);
    r.expect_code(7)
        .one_line_error(&["no lifeboat repository", &e.repo.display().to_string()]);
    // Also for a command that would write.
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    e.run(&[OsStr::new("backup"), src.as_os_str()])
        .expect_code(7)
        .one_line_error(&["no lifeboat repository"]);
}

/// With `--json` a failure still prints one JSON document on stdout (the reason and the exit
/// code), so a script that parses stdout never gets empty input; stderr keeps its one line.
#[test]
fn json_failures_print_an_error_document() {
    let e = Env::new();
    let r = e.run(&["--json", "snapshots"]);
    r.expect_code(7).one_line_error(&["no lifeboat repository"]);
    let j = r.json();
    assert_eq!(j["error"]["exit_code"], 7, "{r}");
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no lifeboat repository") && msg.contains(e.repo.to_str().unwrap()),
        "{r}"
    );
    assert!(!r.stderr.contains('{'), "the JSON document went to stderr:\n{r}");

    let e = Env::with_repo(&[]);
    let r = e.run_env(
        &["--json", "snapshots"],
        &[("LIFEBOAT_PASSWORD", OsStr::new("not the passphrase"))],
    );
    r.expect_code(4);
    assert_eq!(r.json()["error"]["exit_code"], 4, "{r}");
    assert!(!r.stdout.contains("not the passphrase"), "{r}");
    // A command line that does not parse gets one too (exit 2).
    let r = e.run(&["--json", "snapshots", "--no-such-option"]);
    r.expect_code(2);
    assert_eq!(r.json()["error"]["exit_code"], 2, "{r}");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--no-such-option"),
        "{r}"
    );
    // Success is unchanged: the command's own document, no error member.
    let r = e.run(&["--json", "snapshots"]);
    r.expect_code(0);
    assert!(r.json().get("error").is_none(), "{r}");
}

/// An empty `LIFEBOAT_*` variable counts as unset (a unit file's `LIFEBOAT_CONFIG=`), instead
/// of clap's "a value is required for '--config'" or a repository at "".
#[test]
fn empty_settings_count_as_unset() {
    let e = Env::with_repo(&[]);
    e.run_env(&["snapshots"], &[("LIFEBOAT_CONFIG", OsStr::new(""))])
        .expect_code(0);
    let mut c = e.command();
    c.env("LIFEBOAT_REPO", "").arg("snapshots");
    let r = crate::common::Run::from_output(&[], c.output().expect("run"));
    r.expect_code(7).one_line_error(&["no repository given"]);
}

#[test]
fn missing_repository_is_not_created_by_read_commands() {
    let e = Env::new();
    e.run(&["snapshots"]).expect_code(7);
    e.run(&["check"]).expect_code(7);
    assert!(
        !e.repo.exists(),
        "a read-only command against a missing repository created {}",
        e.repo.display()
    );
}

fn config_error(text: &str, needles: &[&str]) {
    let e = Env::with_repo(&[]);
    let cfg = e.path("lifeboat.toml");
    std::fs::write(&cfg, text).unwrap();
    let r = e.run(&[OsStr::new("--config"), cfg.as_os_str(), OsStr::new("snapshots")]);
    let mut all = vec!["lifeboat.toml", "line"];
    all.extend_from_slice(needles);
    r.expect_code(2).one_line_error(&all);
}

#[test]
fn config_unknown_key_exits_2_with_file_and_line() {
    config_error(
        "[repository]\ncompression_level = 3\nlocaton = \"/tmp/x\"\n",
        &["line 3", "locaton"],
    );
}

#[test]
fn config_bad_toml_exits_2_with_file_and_line() {
    config_error(
        "[repository]\nlocation = \"/tmp/x\"\n[sources.a\npaths = []\n",
        &["line 3"],
    );
}

#[test]
fn config_unknown_key_in_a_source_exits_2() {
    config_error(
        "[sources.etc]\npaths = [\"/etc\"]\nexclud = [\"*.tmp\"]\n",
        &["line 3", "exclud"],
    );
}

#[test]
fn source_path_missing_exits_6() {
    let e = Env::with_repo(&[]);
    let missing = e.path("does-not-exist");
    let r = e.run(&[OsStr::new("backup"), missing.as_os_str()]);
    r.expect_code(6).one_line_error(&[&missing.display().to_string()]);
    assert!(e.snapshot_ids().is_empty(), "a failed backup committed a snapshot");
}

#[test]
fn source_path_missing_among_good_ones_exits_6_before_any_work() {
    let e = Env::with_repo(&[]);
    let good = e.path("good");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(good.join("f"), b"data").unwrap();
    let missing = e.path("gone");
    e.run(&[OsStr::new("backup"), good.as_os_str(), missing.as_os_str()])
        .expect_code(6)
        .one_line_error(&["gone"]);
    assert!(e.snapshot_ids().is_empty());
}

/// Root reads every file whatever its mode, so the backup runs as `nobody`, for whom mode 000
/// really is unreadable. Skipped when not root or `setpriv` is unavailable.
#[test]
fn unreadable_file_gives_partial_snapshot_exit_3() {
    if !is_root() {
        eprintln!("note: not root; cannot switch to nobody; skipping");
        return;
    }
    let e = Env::new();
    // Let nobody through the temp dir and write the repository and cache.
    set_mode(e.dir.path(), 0o777);
    let src = e.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("readable.txt"), b"everyone can read me").unwrap();
    std::fs::write(src.join("sub/also-readable"), b"me too").unwrap();
    std::fs::write(src.join("secret.key"), b"nobody may read me").unwrap();
    set_mode(&src.join("secret.key"), 0o000);
    for d in [&src, &src.join("sub")] {
        set_mode(d, 0o755);
    }
    for f in ["readable.txt", "sub/also-readable"] {
        set_mode(&src.join(f), 0o644);
    }
    let as_nobody = |args: &[&OsStr]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(crate::common::bin())
            .args(args);
        let std = e.command();
        for (k, v) in std.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let out = c.output();
        match out {
            Ok(o) => Some(crate::common::Run::from_output(args, o)),
            Err(_) => None,
        }
    };
    let Some(init) = as_nobody(&[OsStr::new("init")]) else {
        eprintln!("note: setpriv unavailable; skipping");
        return;
    };
    if init.code != 0 {
        eprintln!("note: cannot run as nobody ({init}); skipping");
        return;
    }
    let r = as_nobody(&[OsStr::new("--json"), OsStr::new("backup"), src.as_os_str()]).unwrap();
    r.expect_code(3);
    assert!(
        r.stderr.contains("secret.key"),
        "the warning must name the unreadable file:\n{r}"
    );
    let j = r.json();
    let unreadable = j["unreadable"].as_array().expect("unreadable list");
    assert_eq!(unreadable.len(), 1, "{r}");
    assert!(unreadable[0].as_str().unwrap().contains("secret.key"));

    // The snapshot exists (as root now) and the readable files restore.
    let ids = e.snapshot_ids();
    assert_eq!(ids.len(), 1);
    let target = e.path("restore");
    e.restore(&ids[0], &target);
    let out = restored(&target, &src);
    assert_eq!(
        std::fs::read(out.join("readable.txt")).unwrap(),
        b"everyone can read me"
    );
    assert_eq!(std::fs::read(out.join("sub/also-readable")).unwrap(), b"me too");
    assert!(
        !out.join("secret.key").exists(),
        "an unreadable file must not be restored"
    );
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn restore_into_non_empty_target_exits_8_and_writes_nothing() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"snapshot content").unwrap();
    e.backup(&[&src]);
    let target = e.path("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("precious"), b"do not touch").unwrap();
    let before = snapshot_of(&target);
    let r = e.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
    ]);
    r.expect_code(8)
        .one_line_error(&["not empty", &target.display().to_string()]);
    assert_eq!(snapshot_of(&target), before, "a refused restore changed the target");
}

#[test]
fn restore_onto_a_file_exits_8() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"x").unwrap();
    e.backup(&[&src]);
    let target = e.path("target-file");
    std::fs::write(&target, b"i am a file").unwrap();
    e.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
    ])
    .expect_code(8)
    .one_line_error(&["not a directory"]);
    assert_eq!(std::fs::read(&target).unwrap(), b"i am a file");
}

#[test]
fn init_twice_exits_2_already_exists() {
    let e = Env::with_repo(&[]);
    let keys_before = crate::common::all_files(&e.repo);
    e.run(&["init"])
        .expect_code(2)
        .one_line_error(&["already exists", &e.repo.display().to_string()]);
    assert_eq!(
        crate::common::all_files(&e.repo),
        keys_before,
        "a refused init wrote files"
    );
}

#[test]
fn invalid_read_data_subset_exits_2() {
    let e = Env::with_repo(&[]);
    for bad in ["200%", "-5%", "abc", "0/7", "8/7", "1/0"] {
        e.run(&["check".to_string(), format!("--read-data-subset={bad}")])
            .expect_code(2)
            .one_line_error(&["--read-data-subset", bad]);
    }
}

#[test]
fn restore_unknown_snapshot_exits_11() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"x").unwrap();
    e.backup(&[&src]);
    let target = e.path("target");
    for r in ["deadbeef", "latest-but-not"] {
        e.run(&[
            OsStr::new("restore"),
            OsStr::new(r),
            OsStr::new("-t"),
            target.as_os_str(),
        ])
        .expect_code(11)
        .one_line_error(&["snapshot", r, "not found", e.repo.to_str().unwrap()]);
    }
    assert!(!target.exists(), "restore of an unknown snapshot created the target");
    // `latest` on an empty repository is also "not found".
    let e2 = Env::with_repo(&[]);
    e2.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
    ])
    .expect_code(11)
    .one_line_error(&["latest"]);
}

#[test]
fn bad_option_values_exit_2() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    e.run(&[
        OsStr::new("backup"),
        OsStr::new("--checkpoint-interval"),
        OsStr::new("soon"),
        src.as_os_str(),
    ])
    .expect_code(2)
    .one_line_error(&["soon"]);
    e.run(&["prune", "--grace", "forever"])
        .expect_code(2)
        .one_line_error(&["forever"]);
    e.run(&["prune", "--repack-threshold", "2"])
        .expect_code(2)
        .one_line_error(&["repack-threshold"]);
    e.run(&["no-such-command"]).expect_code(2);
}

#[test]
fn a_good_round_trip_still_works() {
    // Sanity check of the helpers themselves.
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    crate::common::write_random(&src.join("x/y.bin"), 100_000, 1);
    std::fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("x/y.bin", src.join("link")).unwrap();
    e.backup(&[&src]);
    let target = e.path("t");
    e.restore("latest", &target);
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn listing_into_a_closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    for i in 0..3000 {
        let d = src.join(format!("d{}", i % 30));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), b"x").unwrap();
    }
    e.backup(&[&src]);
    let mut c = e.command();
    c.args(["ls", "latest"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .unwrap();
    // The reader is gone (like `| head -1`); the listing must not panic on the next writes.
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!first.is_empty());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}
