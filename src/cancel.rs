//! Ctrl-C and SIGTERM: the first one asks running work to stop cleanly (partial downloads are
//! flushed so the next run resumes), a second one ends the process at once.
use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    const MSG: &[u8] = b"\nstopping cleanly (interrupt again to quit at once)\n";
    if !REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: write(2) is async-signal-safe.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
        }
    } else {
        // Second signal: restore the default action and re-raise it.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Installs the handlers (the CLI does this once at start).
pub fn install() {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// True once a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}
