//! Prefetching WAL for recovery, in the background.
//!
//! PostgreSQL's recovery runs `restore_command` once per segment and replays that segment before
//! it asks for the next one. Fetching each segment only when asked leaves replay waiting on the
//! repository (a round trip to object storage, decryption, decompression) at every segment;
//! fetching a batch inside the call makes it wait for the whole batch. Like pgBackRest's
//! asynchronous archive-get and WAL-G's prefetch, `lifeboat wal fetch` keeps a window of the next
//! segments in a local spool instead: after answering, a call that finds at least half of the
//! window missing starts one *prefetcher* in the background, which fetches them on every core and
//! exits. The next calls are answered from the spool by a rename.
//!
//! Spooled files are not synced: PostgreSQL syncs each restored segment itself before it keeps
//! it. A file renamed into the spool is complete unless the machine crashed after the rename (a
//! process that dies leaves only its temporary file), so the spool records the kernel's boot id
//! and only serves files of the boot that wrote them; after a reboot it is emptied first. Where no
//! boot id can be read, spooled files are synced as before.
//!
//! One prefetcher at a time per spool: the call that starts it takes an exclusive `flock` on
//! `fetched/prefetcher.lock`, writes the *plan* (a nonce and the names to fetch) and hands the
//! locked file to the prefetcher as its standard input, so the lock lives as long as the
//! prefetcher. The prefetcher acts only when its environment carries the plan's nonce: a stray
//! variable in `restore_command`'s environment cannot turn a call into one that answers without
//! writing its segment. A call whose segment is in a running prefetcher's plan waits for it
//! instead of fetching the segment a second time.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lifeboat_repo::Repository;
use lifeboat_repo::named;

use crate::error::{PgError, Result};
use crate::wal::{FetchReport, Spool, write_stream};
use crate::wal_names::Segment;

const LOCK: &str = "prefetcher.lock";
const PLAN: &str = "prefetcher.plan";
const BOOT: &str = ".boot";
const LOG: &str = "prefetcher.log";
const END: &str = "prefetcher.end";

fn dir(spool: &Spool) -> PathBuf {
    spool.dir().join("fetched")
}

/// This boot's id, or `None` where the kernel does not say (spooled files are then synced).
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string()).filter(|s| !s.is_empty())
}

/// What the spool's boot marker must say for its files to be served.
fn boot_tag() -> String {
    boot_id().unwrap_or_else(|| "synced".into())
}

/// True when `name` is a file the spool serves (not a temporary file, the lock, the plan...).
fn is_wal_name(name: &str) -> bool {
    name.len() >= 24 && !name.contains(".lifeboat-tmp") && name.bytes().take(8).all(|b| b.is_ascii_hexdigit())
}

/// Removes spooled segments: all of them and any temporary file a killed prefetcher left
/// (`older_than` None: an earlier boot wrote them), or those before `older_than`. False when
/// something could not be removed.
fn clear(spool: &Spool, older_than: Option<&str>) -> bool {
    let mut all_gone = true;
    if let Ok(rd) = std::fs::read_dir(dir(spool)) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let doomed = match older_than {
                Some(o) => is_wal_name(&n) && n.as_str() < o,
                None => is_wal_name(&n) || n.ends_with(".lifeboat-tmp"),
            };
            if doomed && std::fs::remove_file(e.path()).is_err() {
                all_gone = false;
            }
        }
    }
    all_gone
}

/// Drops spooled segments older than segment `name`: recovery has moved past them (or onto
/// another timeline, whose names sort after). A history file drops nothing: recovery may still
/// need the older timeline up to the fork.
pub fn drop_older(spool: &Spool, name: &str) {
    if is_wal_name(name) {
        clear(spool, Some(name));
    }
}

/// Empties the spool once recovery is over (waiting up to `wait` for a running prefetcher):
/// what a recovery that stopped at its target left prefetched is never asked for.
pub fn discard(spool: &Spool, wait: Duration) {
    let started = Instant::now();
    while running(spool) && started.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = clear(spool, None);
}

/// Serves `name` from the spool (a rename into `dest`), if a prefetcher of this boot left it
/// there. Never an error: PostgreSQL reads any failure of `restore_command` as "not found" and
/// could end recovery there, so whatever goes wrong here (the file gone meanwhile, a copy
/// that fails) is `None`, and the caller fetches the segment from the repository.
pub fn take(spool: &Spool, name: &str, dest: &Path) -> Option<FetchReport> {
    let src = dir(spool).join(name);
    if !src.exists() {
        return None;
    }
    if std::fs::read_to_string(dir(spool).join(BOOT)).ok().as_deref() != Some(boot_tag().as_str()) {
        // Written before a crash of the machine, or by a version that kept no marker: the
        // contents may not have reached the disk. Nothing of it is served.
        let _ = clear(spool, None);
        return None;
    }
    let bytes = std::fs::metadata(&src).ok()?.len();
    if std::fs::rename(&src, dest).is_err() {
        // Another file system: copy (PostgreSQL syncs what it keeps).
        let tmp = crate::wal::tmp_name(dest);
        let copied = std::fs::copy(&src, &tmp).and_then(|_| std::fs::rename(&tmp, dest));
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return None;
        }
        let _ = std::fs::remove_file(&src);
    }
    Some(FetchReport {
        name: name.into(),
        from_spool: true,
        prefetch_started: 0,
        bytes,
    })
}

/// The segments of the window after `name` (`count` of them, same timeline) not spooled yet.
/// Empty when `name` is not a segment of `segment_size` bytes (a history file, a partial one).
pub fn wanted(spool: &Spool, name: &str, segment_size: u64, count: usize) -> Vec<String> {
    if !segment_size.is_power_of_two() {
        return Vec::new();
    }
    let Some(mut s) = Segment::parse(name, segment_size) else {
        return Vec::new();
    };
    let d = dir(spool);
    let mut out = Vec::new();
    for _ in 0..count {
        s = s.next();
        let n = s.name(segment_size);
        if !d.join(&n).exists() {
            out.push(n);
        }
    }
    out
}

/// True while a prefetcher holds the spool's lock.
pub fn running(spool: &Spool) -> bool {
    crate::worker_lock::held(&dir(spool).join(LOCK))
}

/// Takes the lock a new prefetcher will hold (`None`: one is running or just starting), and
/// writes its plan: `nonce` and the names it is to fetch.
pub fn claim(spool: &Spool, nonce: &str, names: &[String]) -> Result<Option<File>> {
    let Some(f) = crate::worker_lock::try_take(&dir(spool).join(LOCK))? else {
        return Ok(None);
    };
    let d = dir(spool);
    let mut text = format!("{nonce}\n");
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    let tmp = d.join(format!(".{PLAN}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, d.join(PLAN)))
        .map_err(|e| PgError::io(d.join(PLAN), e))?;
    Ok(Some(f))
}

fn read_plan(spool: &Spool) -> Option<(String, Vec<String>)> {
    let text = std::fs::read_to_string(dir(spool).join(PLAN)).ok()?;
    let mut lines = text.lines();
    let nonce = lines.next()?.to_string();
    Some((nonce, lines.map(str::to_string).collect()))
}

/// The names to fetch when this process is the prefetcher started with `nonce`.
pub fn plan_for(spool: &Spool, nonce: &str) -> Option<Vec<String>> {
    read_plan(spool)
        .filter(|(n, _)| !nonce.is_empty() && n == nonce)
        .map(|(_, names)| names)
}

/// How long a prefetcher's finding that a segment is not archived holds: calls near the end of
/// the archive (the last segments of a recovery, a standby waiting for the next segment) start
/// no new prefetcher that would only find the same.
const END_HOLDS: Duration = Duration::from_secs(5);

/// Records that `name` was not in the repository (the end of the archive, for now).
pub fn note_end(spool: &Spool, name: &str) {
    let _ = std::fs::write(dir(spool).join(END), name);
}

/// True when a prefetcher found one of `names` missing less than [`END_HOLDS`] ago.
pub fn recently_ended(spool: &Spool, names: &[String]) -> bool {
    let p = dir(spool).join(END);
    let fresh = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < END_HOLDS));
    fresh && std::fs::read_to_string(&p).is_ok_and(|n| names.contains(&n))
}

/// Where a prefetcher's messages go (PostgreSQL's log only sees the calls).
pub fn log_path(spool: &Spool) -> PathBuf {
    dir(spool).join(LOG)
}

/// Waits for a running prefetcher to spool `name`, when its plan has it; `None` when no
/// prefetcher is going to (the caller then fetches `name` itself).
pub fn wait_for(spool: &Spool, name: &str, dest: &Path, timeout: Duration) -> Option<FetchReport> {
    if !running(spool) || !read_plan(spool).is_some_and(|(_, names)| names.iter().any(|n| n == name)) {
        // It may have spooled this one and exited since the caller looked.
        return take(spool, name, dest);
    }
    let started = Instant::now();
    loop {
        if let Some(r) = take(spool, name, dest) {
            return Some(r);
        }
        if !running(spool) {
            return take(spool, name, dest);
        }
        if started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// True when this process's standard input is the spool's prefetcher lock: how a prefetcher
/// started by [`claim`]'s caller knows itself (with the plan's nonce in its environment).
pub fn holds_lock(spool: &Spool) -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return false;
    };
    let (Ok(mine), Ok(lock)) = (File::from(fd).metadata(), std::fs::metadata(dir(spool).join(LOCK))) else {
        return false;
    };
    mine.dev() == lock.dev() && mine.ino() == lock.ino()
}

/// What a prefetcher did.
#[derive(Clone, Debug, Default)]
pub struct PrefetchReport {
    /// Segments spooled.
    pub fetched: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The first name of the plan the repository did not have (the end of the archive).
    pub missing: Option<String>,
}

/// The prefetcher's body: spools every name of `names` (in order, on `threads` threads) until
/// one is not in the repository. A segment that fails (the usual cause: archived after the index
/// was loaded, so its blobs are unknown here) stops the prefetcher; the call asking for it
/// fetches it itself.
pub fn prefetch(
    repo: &Repository,
    namespace: &str,
    spool: &Spool,
    names: &[String],
    threads: usize,
) -> Result<PrefetchReport> {
    let d = dir(spool);
    let tag = boot_tag();
    let sync = boot_id().is_none();
    if std::fs::read_to_string(d.join(BOOT)).ok().as_deref() != Some(tag.as_str()) {
        // The marker vouches for every file here: written only once the old ones are all gone.
        if !clear(spool, None) {
            return Err(PgError::Invalid(format!(
                "{}: cannot empty the spool of an earlier boot",
                d.display()
            )));
        }
        std::fs::write(d.join(BOOT), &tag).map_err(|e| PgError::io(d.join(BOOT), e))?;
    }
    let index = repo.load_index_for_reading()?;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let fetched = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let missing = std::sync::Mutex::new(None::<String>);
    std::thread::scope(|sc| {
        for _ in 0..threads.clamp(1, names.len().max(1)) {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= names.len() || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let target = d.join(&names[i]);
                    if target.exists() {
                        continue;
                    }
                    match named::read_manifest(repo, namespace, &names[i]) {
                        Ok(Some(m)) => match write_stream(repo, &index, &m, &target, sync) {
                            Ok(n) => {
                                fetched.fetch_add(1, Ordering::SeqCst);
                                bytes.fetch_add(n, Ordering::SeqCst);
                            }
                            Err(_) => stop.store(true, Ordering::SeqCst),
                        },
                        Ok(None) => {
                            stop.store(true, Ordering::SeqCst);
                            let mut m = missing.lock().unwrap_or_else(|e| e.into_inner());
                            if m.as_ref().is_none_or(|o| names[i] < *o) {
                                *m = Some(names[i].clone());
                            }
                        }
                        Err(_) => stop.store(true, Ordering::SeqCst),
                    }
                }
            });
        }
    });
    Ok(PrefetchReport {
        fetched: fetched.into_inner(),
        bytes: bytes.into_inner(),
        missing: missing.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ready, repo};
    use crate::wal::{WalCompression, push};

    fn names(from: u64, to: u64) -> Vec<String> {
        (from..=to).map(|n| format!("0000000100000000000000{n:02X}")).collect()
    }

    #[test]
    fn prefetched_segments_are_served_once_and_only_from_this_boot() {
        let tmp = tempfile::tempdir().unwrap();
        let wal = tmp.path().join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let r = repo();
        let push_spool = Spool::new(tmp.path().join("push"));
        let size = 16u64 << 20;
        let seg = |i: u8| crate::test_support::segment(i, 1 << 20);
        for (i, n) in names(1, 3).iter().enumerate() {
            ready(&wal, n, &seg(i as u8));
            push(&r, "wal-7", &push_spool, &wal.join(n), 1, WalCompression::Zstd).unwrap();
        }
        let spool = Spool::new(tmp.path().join("fetch"));
        let want = wanted(&spool, &names(1, 1)[0], size, 4);
        assert_eq!(want, names(2, 5));

        // Nothing is fetched without the lock and a plan carrying the nonce.
        let lock = claim(&spool, "n1", &want).unwrap().unwrap();
        assert!(running(&spool), "the lock is held");
        assert!(
            claim(&spool, "n2", &want).unwrap().is_none(),
            "one prefetcher at a time"
        );
        assert_eq!(plan_for(&spool, "other"), None);
        assert_eq!(plan_for(&spool, ""), None);
        let plan = plan_for(&spool, "n1").unwrap();
        let rep = prefetch(&r, "wal-7", &spool, &plan, 2).unwrap();
        assert_eq!(rep.fetched, 2);
        assert_eq!(rep.missing.as_deref(), Some(names(4, 4)[0].as_str()));
        assert_eq!(wanted(&spool, &names(1, 1)[0], size, 4), names(4, 5));
        assert!(!recently_ended(&spool, &names(4, 5)));
        note_end(&spool, &names(4, 4)[0]);
        assert!(recently_ended(&spool, &names(4, 5)));
        assert!(!recently_ended(&spool, &names(5, 6)));

        // A call for a planned segment is answered from the spool while the prefetcher runs.
        let dest = tmp.path().join("RECOVERYXLOG");
        let got = wait_for(&spool, &names(2, 2)[0], &dest, Duration::from_secs(5)).unwrap();
        assert!(got.from_spool);
        assert!(std::fs::read(&dest).unwrap() == seg(1));
        assert!(take(&spool, &names(2, 2)[0], &dest).is_none(), "served once");
        drop(lock);
        assert!(!running(&spool));
        let got = wait_for(&spool, &names(3, 3)[0], &dest, Duration::from_secs(5));
        assert!(got.is_some(), "no prefetcher any more, but it spooled this one");
        assert!(
            wait_for(&spool, &names(4, 4)[0], &dest, Duration::from_secs(5)).is_none(),
            "no prefetcher: the caller fetches itself"
        );
        std::fs::write(dir(&spool).join(&names(3, 3)[0]), b"spooled").unwrap();

        // Files of another boot (or of an older version, without marker) are never served.
        std::fs::write(dir(&spool).join(BOOT), "another boot").unwrap();
        std::fs::write(dir(&spool).join("000000010000000000000009.lifeboat-tmp"), b"x").unwrap();
        assert!(take(&spool, &names(3, 3)[0], &dest).is_none());
        assert!(!dir(&spool).join("000000010000000000000009.lifeboat-tmp").exists());
        assert!(!dir(&spool).join(&names(3, 3)[0]).exists(), "emptied");

        // Recovery moving on drops what it passed; the lock, plan and marker stay.
        std::fs::write(dir(&spool).join(&names(6, 6)[0]), b"x").unwrap();
        std::fs::write(dir(&spool).join(&names(8, 8)[0]), b"x").unwrap();
        drop_older(&spool, "00000002.history");
        assert!(
            dir(&spool).join(&names(6, 6)[0]).exists(),
            "a history file drops nothing"
        );
        drop_older(&spool, &names(7, 7)[0]);
        assert!(!dir(&spool).join(&names(6, 6)[0]).exists());
        assert!(dir(&spool).join(&names(8, 8)[0]).exists());
        assert!(dir(&spool).join(LOCK).exists() && dir(&spool).join(PLAN).exists());
    }

    #[test]
    fn only_segments_have_a_window() {
        let spool = Spool::new(tempfile::tempdir().unwrap().path().join("s"));
        assert!(wanted(&spool, "00000002.history", 16 << 20, 8).is_empty());
        assert!(wanted(&spool, "000000010000000000000001", 1000, 8).is_empty());
        assert!(!is_wal_name(".boot") && !is_wal_name(LOCK) && !is_wal_name(PLAN));
        assert!(!is_wal_name("000000010000000000000001.lifeboat-tmp"));
        assert!(is_wal_name("000000010000000000000001") && is_wal_name("00000001000000000000000A.partial"));
    }
}
