//! SIGINT and SIGTERM: stop cleanly instead of dying mid-build.
//!
//! The handlers only set two atomics (all a signal handler may safely do). The runner watches
//! [`STOP`]: it launches no new job and terminates the running dkms process groups; `main` then
//! reports what was done and exits 128 + the signal number (130, 143). Whatever is left half
//! done is what `dkms-hook sync` repairs.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Set once SIGINT or SIGTERM arrived.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The number of the first stopping signal (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: nix::libc::c_int) {
    let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM.
pub fn install() -> anyhow::Result<()> {
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(|e| anyhow::anyhow!("failed to handle {signal}: {e}"))?;
    }
    Ok(())
}

/// The stopping signal received, if any.
pub fn received() -> Option<Signal> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// The exit status for a run stopped by `signal`: 128 + its number, as shells report it.
pub fn exit_status(signal: Signal) -> u8 {
    128u8.saturating_add(signal as i32 as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_follow_the_shell_convention() {
        assert_eq!(exit_status(Signal::SIGINT), 130);
        assert_eq!(exit_status(Signal::SIGTERM), 143);
    }
}
