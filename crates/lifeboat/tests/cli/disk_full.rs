//! A full disk: the backup fails with exit 10 and a plain message, the repository stays
//! consistent, and a restore into a full disk never leaves a wrong file under its final name.
//! Uses a small tmpfs (needs root; skipped otherwise).

use std::ffi::OsStr;

use crate::common::{Env, Tmpfs, all_files, is_hex_id, random_bytes, restored, write_random};

#[test]
fn backup_to_full_disk_exits_10_and_repository_stays_consistent() {
    let e = Env::new();
    let Some(mnt) = Tmpfs::mount(&e.path("small"), "8m") else {
        return;
    };
    let repo = mnt.path.join("repo");
    let env: [(&str, &OsStr); 1] = [("LIFEBOAT_REPO", repo.as_os_str())];
    e.run_env(&["init"], &env).ok();

    // A first, small backup that fits.
    let small = e.path("small-src");
    write_random(&small.join("fits.bin"), 300_000, 7);
    e.run_env(&[OsStr::new("backup"), small.as_os_str()], &env).ok();

    // ~20 MB of incompressible data into what is left of 8 MB.
    let src = e.path("src");
    for i in 0..5 {
        write_random(&src.join(format!("f{i}.bin")), 4 << 20, 100 + i);
    }
    let r = e.run_env(&[OsStr::new("backup"), src.as_os_str()], &env);
    r.expect_code(10);
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one-line message expected:\n{r}");
    let l = lines[0].to_lowercase();
    assert!(
        l.contains("space") || l.contains("disk full"),
        "message must say the disk is full:\n{r}"
    );

    // Nothing half-written is visible: only the first snapshot, and every object name is final.
    let snaps = e.run_env(&["--json", "snapshots"], &env).ok().json();
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "a failed backup committed a snapshot"
    );
    for (p, _) in all_files(&repo.join("data")) {
        assert!(
            is_hex_id(&p),
            "a partial upload is left in the repository after the failed backup: {}",
            p.display()
        );
    }
    let r = e.run_env(&["check", "--read-data"], &env);
    r.ok();
    assert!(r.stdout.contains("no errors found"), "{r}");

    // The first snapshot still restores.
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
    assert_eq!(
        std::fs::read(restored(&target, &small).join("fits.bin")).unwrap(),
        random_bytes(300_000, 7)
    );
}

#[test]
fn restore_to_full_disk_fails_without_wrong_files() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    // Small files first (they fit), then large ones that cannot all fit into 8 MB.
    for i in 0..4u64 {
        write_random(&src.join(format!("a-small-{i}.bin")), 50_000, i);
    }
    for i in 0..5u64 {
        write_random(&src.join(format!("b-large-{i}.bin")), 4 << 20, 50 + i);
    }
    e.backup(&[&src]);

    let Some(mnt) = Tmpfs::mount(&e.path("small"), "8m") else {
        return;
    };
    let target = mnt.path.join("target");
    let r = e.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
    ]);
    assert_ne!(r.code, 0, "a restore into a full disk must fail:\n{r}");
    assert!(
        r.stderr.to_lowercase().contains("space"),
        "the message must say the disk is full:\n{r}"
    );

    // Whatever is under its final name is complete and correct.
    let out = restored(&target, &src);
    let mut complete = 0;
    for (p, _) in all_files(&target) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains(".lifeboat-tmp-") {
            continue;
        }
        let rel = p.strip_prefix(&out).expect("inside the restored source");
        let want = std::fs::read(src.join(rel)).unwrap();
        assert!(
            std::fs::read(&p).unwrap() == want,
            "{} is under its final name with wrong content",
            p.display()
        );
        complete += 1;
    }
    assert!(complete < 9, "everything restored into 8 MB?");
}

#[test]

fn restore_to_full_disk_exits_10() {
    let e = Env::with_repo(&[]);
    let src = e.path("src");
    for i in 0..3u64 {
        write_random(&src.join(format!("f{i}.bin")), 4 << 20, 70 + i);
    }
    e.backup(&[&src]);
    let Some(mnt) = Tmpfs::mount(&e.path("small"), "8m") else {
        return;
    };
    let target = mnt.path.join("target");
    e.run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("-t"),
        target.as_os_str(),
    ])
    .expect_code(10);
}
