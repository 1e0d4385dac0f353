//! Shared helpers: an isolated environment per test (repository, cache and sources in one temp
//! dir), running the real binary, deterministic incompressible data and tree comparison.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// The passphrase every test repository uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("lifeboat")
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Builds a run from a finished process, asserting nothing panicked.
    pub fn from_output(args: &[&OsStr], o: Output) -> Run {
        let r = Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        assert!(
            !r.stdout.contains("panicked") && !r.stderr.contains("panicked"),
            "lifeboat {args:?} panicked:\n{r}"
        );
        r
    }

    /// Asserts the exit code, showing everything on failure.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code:\n{self}");
        self
    }

    /// Asserts success.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.expect_code(0)
    }

    /// Asserts stderr is exactly one line starting with `lifeboat: ` and containing every needle.
    #[track_caller]
    pub fn one_line_error(&self, needles: &[&str]) -> &Self {
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected a one-line error message:\n{self}");
        assert!(lines[0].starts_with("lifeboat: "), "{self}");
        for n in needles {
            assert!(
                lines[0].to_lowercase().contains(&n.to_lowercase()),
                "error message lacks {n:?}:\n{self}"
            );
        }
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// One isolated test environment.
pub struct Env {
    /// Holds everything; removed on drop.
    pub dir: TempDir,
    /// The repository location.
    pub repo: PathBuf,
    /// The local cache folder.
    pub cache: PathBuf,
}

impl Env {
    /// A fresh environment (no repository yet).
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-test-")
            .tempdir()
            .expect("tempdir");
        let repo = dir.path().join("repo");
        let cache = dir.path().join("cache");
        Env { dir, repo, cache }
    }

    /// A fresh environment with an initialised repository.
    pub fn with_repo(init_args: &[&str]) -> Env {
        let e = Env::new();
        let mut args = vec!["init"];
        args.extend_from_slice(init_args);
        e.run(&args).ok();
        e
    }

    /// A path inside the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A `std::process::Command` for the binary with the environment set.
    pub fn command(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("LIFEBOAT_INSECURE_FAST_KDF", "1")
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("LIFEBOAT_REPO", &self.repo)
            .env("LIFEBOAT_CACHE_DIR", &self.cache)
            .env("LIFEBOAT_HOST", "testhost")
            .env_remove("LIFEBOAT_CONFIG")
            .env_remove("LIFEBOAT_PASSWORD_FILE")
            .env_remove("LIFEBOAT_PASSWORD_COMMAND")
            .env_remove("LIFEBOAT_NEW_PASSWORD")
            .stdin(Stdio::null());
        c
    }

    /// The same, as an `assert_cmd` command.
    pub fn cmd(&self) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.command())
    }

    /// Runs the binary to completion with extra environment variables.
    pub fn run_env<S: AsRef<OsStr>>(&self, args: &[S], env: &[(&str, &OsStr)]) -> Run {
        let mut c = self.command();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("run lifeboat");
        let a: Vec<&OsStr> = args.iter().map(|s| s.as_ref()).collect();
        Run::from_output(&a, out)
    }

    /// Runs the binary to completion.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        self.run_env(args, &[])
    }

    /// Backs up `paths` with `--json`, asserting success; returns the JSON result.
    pub fn backup(&self, paths: &[&Path]) -> serde_json::Value {
        let mut args: Vec<&OsStr> = vec![OsStr::new("--json"), OsStr::new("backup")];
        args.extend(paths.iter().map(|p| p.as_os_str()));
        self.run(&args).ok().json()
    }

    /// Restores `snapshot` into `target`, asserting success.
    pub fn restore(&self, snapshot: &str, target: &Path) {
        self.run(&[
            OsStr::new("restore"),
            OsStr::new(snapshot),
            OsStr::new("-t"),
            target.as_os_str(),
        ])
        .ok();
    }

    /// `check --read-data` must pass.
    #[track_caller]
    pub fn check_read_data_ok(&self) {
        let r = self.run(&["check", "--read-data"]);
        r.ok();
        assert!(r.stdout.contains("no errors found"), "{r}");
    }

    /// Snapshot ids, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let v = self.run(&["--json", "snapshots"]).ok().json();
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_string())
            .collect()
    }
}

/// Deterministic, fast, incompressible bytes (xorshift64*).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a file of deterministic random bytes, creating parents.
pub fn write_random(path: &Path, len: usize, seed: u64) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, random_bytes(len, seed)).expect("write");
}

/// Where a source path ends up under a restore target (absolute paths are recreated under it).
pub fn restored(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source"))
}

/// Every regular file and symlink under `root`, relative path → content (or link target).
pub fn snapshot_of(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).expect("under root").to_path_buf();
            // A running backup may rename or remove a temporary file between the two calls.
            let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
            if m.is_dir() {
                out.insert(rel.join(""), b"<dir>".to_vec());
                go(root, &p, out);
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).expect("readlink");
                out.insert(rel, [b"<link>".as_slice(), t.as_os_str().as_encoded_bytes()].concat());
            } else {
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

/// Asserts two trees hold the same files with the same bytes (names only shown on mismatch).
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot_of(expected);
    let b = snapshot_of(actual);
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    assert_eq!(
        ka,
        kb,
        "restored tree {} lists different entries than {}",
        actual.display(),
        expected.display()
    );
    for (k, v) in &a {
        assert!(b[k] == *v, "{} differs after restore", k.display());
    }
}

/// Every file under `root` (recursively), with its size.
pub fn all_files(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            // A running backup may rename or remove a temporary file between the two calls.
            let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
            if m.is_dir() {
                stack.push(p);
            } else {
                out.push((p, m.size()));
            }
        }
    }
    out.sort();
    out
}

/// Pack files of a repository, largest first.
pub fn packs(repo: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<_> = all_files(&repo.join("data"))
        .into_iter()
        .filter(|(p, _)| is_hex_id(p))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// True when the file name is a 64-digit hex id.
pub fn is_hex_id(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Objects in a repository folder (index, snapshots, …).
pub fn objects(repo: &Path, folder: &str) -> Vec<PathBuf> {
    all_files(&repo.join(folder)).into_iter().map(|(p, _)| p).collect()
}

/// XORs one byte of a file.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("read");
    b[0] ^= 0x5a;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("write");
}

/// True when running as root.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A tmpfs mounted for the test; unmounted on drop. `None` (test skipped) when mounting fails.
pub struct Tmpfs {
    /// Mount point.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "8m") at `path`.
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).ok()?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !st.success() {
            eprintln!("note: cannot mount a tmpfs (not root?); skipping this test");
            return None;
        }
        Some(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().map(|s| s.success());
        if ok.ok() != Some(true) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
