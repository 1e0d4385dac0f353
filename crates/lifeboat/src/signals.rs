//! Stop requests for `wal stream`, a command run as a service: SIGTERM (how a service manager
//! stops it), SIGINT (Ctrl-C) and SIGHUP (terminal closed) set a flag its loop polls, so it ends
//! pg_receivewal, stores what was received and exits 0 with its summary instead of dying with
//! its child still holding the replication slot.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first SIGTERM, SIGINT or SIGHUP once [`stop_on_signals`] ran.
static STOP: AtomicBool = AtomicBool::new(false);

/// The signals that ask a streaming command to stop.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// The first signal sets [`STOP`]; a second one means "now" and exits at once with 128 + the
/// signal (the child gets SIGINT from the kernel through its parent-death signal).
extern "C" fn on_stop_signal(sig: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe; nothing else is done here.
        #[allow(unsafe_code)]
        unsafe {
            libc::_exit(128 + sig)
        }
    }
}

/// Installs the handlers and returns the flag they set.
#[allow(unsafe_code)]
pub fn stop_on_signals() -> &'static AtomicBool {
    for sig in STOP_SIGNALS {
        // SAFETY: a plain sigaction call; the handler only touches an atomic and calls _exit,
        // both async-signal-safe. SA_RESTART keeps blocking calls in other threads going.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    &STOP
}
