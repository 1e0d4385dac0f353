//! A fault under a mapped WAL segment, turned into a one-line error and an exit code.
//!
//! `wal push` hashes and seals segments through a memory map ([`crate::wal_map`]). Reading a
//! mapped page that cannot be read (a disk error, EIO) or that no longer exists (another
//! process truncated the file) raises SIGBUS, which by default kills the process without a
//! word: PostgreSQL's log then shows only "archive command was terminated by signal 7", and a
//! background pusher leaves no `pusher.error`, so no back-off applies.
//!
//! Once [`report_faults`] is called, a SIGBUS whose address lies inside a registered map
//! writes one line naming the segment to standard error, optionally the same line to an error
//! file, and ends the process with the given exit code. Nothing was acknowledged at that point
//! (markers and the archiver's answer come only after a commit), and the repository is as a
//! killed process leaves it: consistent. A SIGBUS anywhere else is left to the default action.
//!
//! Everything the handler touches is async-signal-safe: a fixed table of atomics (no locks, no
//! allocation), `write(2)`, `open(2)`, `close(2)` and `_exit(2)`.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicUsize, Ordering};

/// Maps watched at once; a batch holds at most its segments mapped (`--batch`, 64 by default,
/// and the background pusher's commits of 8). A map beyond this is still used, only its fault
/// would then end the process with a bare SIGBUS instead of the line naming the segment.
const SLOTS: usize = 128;

/// Longest file name kept for the message (WAL segment names are 24 characters).
const NAME_MAX: usize = 64;

struct Slot {
    busy: AtomicBool,
    /// 0 while the slot is being filled or cleared: the handler skips it.
    start: AtomicUsize,
    len: AtomicUsize,
    name_len: AtomicUsize,
    name: [AtomicU8; NAME_MAX],
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            busy: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            name_len: AtomicUsize::new(0),
            name: [const { AtomicU8::new(0) }; NAME_MAX],
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

struct Config {
    exit_code: AtomicI32,
    /// NUL-terminated path of the error file, if any (set once, before the handler is).
    error_file: OnceLock<CString>,
    installed: AtomicBool,
}

static CONFIG: Config = Config {
    exit_code: AtomicI32::new(1),
    error_file: OnceLock::new(),
    installed: AtomicBool::new(false),
};

/// A registered map: unregistered when dropped (before the map itself is unmapped).
pub(crate) struct Registration(Option<usize>);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            TABLE[i].start.store(0, Ordering::Release);
            TABLE[i].busy.store(false, Ordering::Release);
        }
    }
}

/// Watches `bytes` (a live map of the file called `name`) until the registration is dropped.
pub(crate) fn register(bytes: &[u8], name: &str) -> Registration {
    let slot = TABLE.iter().position(|s| {
        s.busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    if let Some(i) = slot {
        let s = &TABLE[i];
        let n = name.len().min(NAME_MAX);
        for (d, b) in s.name.iter().zip(&name.as_bytes()[..n]) {
            d.store(*b, Ordering::Relaxed);
        }
        s.name_len.store(n, Ordering::Relaxed);
        s.len.store(bytes.len(), Ordering::Relaxed);
        s.start.store(bytes.as_ptr() as usize, Ordering::Release);
    }
    Registration(slot)
}

/// From now on, a SIGBUS inside a registered map prints one line, writes it to `error_file`
/// too when given (a background pusher's `pusher.error`, which starts the back-off), and exits
/// with `exit_code`. Called by the program, not the library's own code, because only the
/// program knows its exit codes. The first call's `error_file` stays.
pub fn report_faults(exit_code: u8, error_file: Option<&Path>) {
    CONFIG.exit_code.store(i32::from(exit_code), Ordering::Relaxed);
    if let Some(p) = error_file
        && let Ok(c) = CString::new(p.as_os_str().as_bytes())
    {
        let _ = CONFIG.error_file.set(c);
    }
    if CONFIG.installed.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: a plain sigaction call with a handler that only does async-signal-safe work.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

/// A message in a fixed buffer (no allocation inside the handler).
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn push(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel hands a valid siginfo_t to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let hit = TABLE.iter().find(|s| {
        let start = s.start.load(Ordering::Acquire);
        start != 0 && addr >= start && addr - start < s.len.load(Ordering::Relaxed)
    });
    let Some(slot) = hit else {
        // Not ours: the default action, as if no handler had run (raised again for a SIGBUS
        // sent by kill, which returning would not repeat; a fault would repeat anyway).
        // SAFETY: signal and raise are async-signal-safe.
        unsafe {
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            libc::raise(libc::SIGBUS);
        }
        return;
    };
    let mut line = Line { buf: [0; 512], len: 0 };
    line.push(b"cannot read WAL segment ");
    let n = slot.name_len.load(Ordering::Relaxed);
    for b in &slot.name[..n] {
        line.push(&[b.load(Ordering::Relaxed)]);
    }
    line.push(
        b" (SIGBUS under its memory map: a disk read error, or another process truncated the file); \
nothing was acknowledged, the archiver retries\n",
    );
    let msg = &line.buf[..line.len];
    // SAFETY: write, open, close and _exit are async-signal-safe; the buffers outlive the calls.
    unsafe {
        libc::write(2, b"lifeboat: ".as_ptr().cast(), 10);
        libc::write(2, msg.as_ptr().cast(), msg.len());
        if let Some(path) = CONFIG.error_file.get() {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o600,
            );
            if fd >= 0 {
                libc::write(fd, msg.as_ptr().cast(), msg.len());
                libc::close(fd);
            }
        }
        libc::_exit(CONFIG.exit_code.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "LIFEBOAT_TEST_MAP_FAULT_CHILD";

    /// Run in a child process (a fault ends the process): maps a ready segment, truncates it,
    /// touches a page that no longer exists.
    #[test]
    fn fault_child() {
        let Some(dir) = std::env::var_os(CHILD) else { return };
        let dir = Path::new(&dir);
        let p = dir.join("000000010000000000000007");
        std::fs::write(&p, vec![7u8; 2 << 20]).unwrap();
        std::fs::create_dir_all(dir.join("archive_status")).unwrap();
        std::fs::write(dir.join("archive_status/000000010000000000000007.ready"), "").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let (bytes, _) = crate::wal_map::map(&p, &f, 2 << 20).expect("mapped");
        report_faults(6, Some(&dir.join("pusher.error")));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(0)
            .unwrap();
        let b = std::hint::black_box((*bytes).as_ref()[1 << 20]);
        panic!("read {b} past the end of a truncated map without a fault");
    }

    #[test]
    fn a_fault_under_a_mapped_segment_is_one_line_and_an_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "map_fault::tests::fault_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "stderr: {err}");
        let line = "lifeboat: cannot read WAL segment 000000010000000000000007 (SIGBUS under its memory map";
        assert!(err.contains(line), "stderr: {err}");
        let written = std::fs::read_to_string(dir.path().join("pusher.error")).unwrap();
        assert!(written.starts_with("cannot read WAL segment 000000010000000000000007 ("));
        assert_eq!(written.lines().count(), 1);
    }

    #[test]
    fn a_slot_is_freed_when_its_registration_drops() {
        let data = vec![1u8; 4096];
        let r = register(&data, "000000010000000000000001");
        let i = r.0.expect("a free slot");
        assert_eq!(TABLE[i].start.load(Ordering::Acquire), data.as_ptr() as usize);
        drop(r);
        assert_eq!(TABLE[i].start.load(Ordering::Acquire), 0);
        assert!(!TABLE[i].busy.load(Ordering::Acquire));
    }
}
