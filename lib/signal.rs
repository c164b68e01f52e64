//! SIGTERM/SIGINT as a stop request: Slurm sends SIGTERM on preemption and
//! at the time limit, and the sweep must stop its jobs without marking
//! anything done that is not; the ranks of a data-parallel `train` stop
//! together at the next step (exit 3).
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: the one thing safe to do in a signal handler.
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGTERM and SIGINT (once per process).
pub fn install() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic; sigaction with a
        // zeroed mask and no flags is the plain handler installation.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Requests a stop from inside the process (used by tests and on fatal
/// scheduler errors).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}
