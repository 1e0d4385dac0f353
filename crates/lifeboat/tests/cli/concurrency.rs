//! Backups never take locks: two backups into one repository at the same time both commit, and
//! the repository checks clean and restores both.

use std::process::Stdio;

use crate::common::{Env, Run, assert_same_tree, restored, write_random};

#[test]
fn two_concurrent_backups_of_different_folders_both_succeed() {
    let e = Env::with_repo(&[]);
    let a = e.path("folder-a");
    let b = e.path("folder-b");
    for i in 0..4u64 {
        write_random(&a.join(format!("a{i}.bin")), 1_500_000, 10 + i);
        write_random(&b.join(format!("b{i}.bin")), 1_500_000, 20 + i);
    }
    // Identical content in both: both backups may try to store the same blobs at once.
    write_random(&a.join("shared.bin"), 2_000_000, 99);
    write_random(&b.join("shared.bin"), 2_000_000, 99);

    let spawn = |dir: &std::path::Path| {
        e.command()
            .args(["--json", "backup", "--checkpoint-interval", "1s"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let ca = spawn(&a);
    let cb = spawn(&b);
    let ra = Run::from_output(&[], ca.wait_with_output().unwrap());
    let rb = Run::from_output(&[], cb.wait_with_output().unwrap());
    ra.ok();
    rb.ok();
    let ida = ra.json()["snapshot_id"].as_str().unwrap().to_string();
    let idb = rb.json()["snapshot_id"].as_str().unwrap().to_string();
    assert_ne!(ida, idb);
    assert_eq!(e.snapshot_ids().len(), 2);

    e.check_read_data_ok();
    for (id, src) in [(&ida, &a), (&idb, &b)] {
        let t = e.path(&format!("restore-{}", &id[..8]));
        e.restore(id, &t);
        assert_same_tree(src, &restored(&t, src));
    }
}
