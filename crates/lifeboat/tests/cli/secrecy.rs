//! Nothing readable without the key: no file name, file content or source path appears in any
//! repository object.

use std::path::Path;

use crate::common::{Env, all_files};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_plaintext_names_contents_or_paths_in_the_repository() {
    let e = Env::with_repo(&[]);
    let src = e.path("SUPERSECRET_SOURCE_DIR");
    let name = "SUPERSECRET_FILENAME_42.env";
    let content = "SUPERSECRET_CONTENT_abc".repeat(5000);
    std::fs::create_dir_all(src.join("SUPERSECRET_SUBDIR")).unwrap();
    std::fs::write(src.join(name), &content).unwrap();
    // Small and incompressible-ish content too (stored raw before encryption).
    std::fs::write(src.join("SUPERSECRET_SUBDIR/short.txt"), "SUPERSECRET_CONTENT_abc").unwrap();
    std::os::unix::fs::symlink("SUPERSECRET_LINK_TARGET", src.join("link")).unwrap();
    e.backup(&[&src]);
    // A second snapshot (a parent now exists), and maintenance objects too.
    std::fs::write(src.join("second.txt"), "SUPERSECRET_CONTENT_abc and more").unwrap();
    e.backup(&[&src]);
    e.run(&["forget", "--keep-last", "1"]).ok();
    e.run(&[
        "prune",
        "--grace",
        "0s",
        "--unsafe-short-grace",
        "--repack-threshold",
        "0",
    ])
    .ok();

    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("file name", name.as_bytes().to_vec()),
        ("file name fragment", b"SUPERSECRET".to_vec()),
        ("content", b"SUPERSECRET_CONTENT_abc".to_vec()),
        ("source path", src.display().to_string().into_bytes()),
        ("temp dir path", e.dir.path().display().to_string().into_bytes()),
        ("link target", b"SUPERSECRET_LINK_TARGET".to_vec()),
    ];
    let files = all_files(&e.repo);
    assert!(files.len() >= 5, "repository unexpectedly small: {files:?}");
    for (f, _) in &files {
        let bytes = std::fs::read(f).unwrap();
        for (what, n) in &needles {
            assert!(
                !contains(&bytes, n),
                "the {what} appears in plaintext in {}",
                f.strip_prefix(&e.repo).unwrap_or(Path::new("?")).display()
            );
        }
    }
}
