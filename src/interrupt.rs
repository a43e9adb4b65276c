//! SIGINT, SIGTERM and SIGHUP: stop cleanly instead of dying mid-build.
//!
//! pacman treats a hangup like an interrupt, and so does dkms-hook. The handler only does what a
//! signal handler may: it stores two atomics and writes one byte to a pipe. Whoever waits (the
//! process runner waiting for dkms, the lock waiter) polls that pipe beside what it waits for, so
//! a stop request wakes it at once without any periodic checking. The runner then launches no new
//! job and terminates the running dkms process groups; the session reports what was done and the
//! process exits 128 + the signal number (129, 130, 143). Whatever is left half done is what
//! `dkms-hook sync` repairs.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// A stop request that a waiter can poll for: a flag, and a pipe that becomes readable when the
/// flag is set (the pipe is never drained, so it stays readable).
#[derive(Debug)]
pub struct Stop {
    flag: AtomicBool,
    /// The pipe's write end, for [`Stop::set`] (which must not allocate or lock); -1 until made.
    write_fd: AtomicI32,
    /// (read end, write end), made on first use of [`Stop::waker`].
    pipe: OnceLock<Option<(OwnedFd, OwnedFd)>>,
}

impl Stop {
    /// A stop request that is not set.
    pub const fn new() -> Stop {
        Stop { flag: AtomicBool::new(false), write_fd: AtomicI32::new(-1), pipe: OnceLock::new() }
    }

    /// True once a stop was requested.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Requests the stop. Async-signal-safe: an atomic store and one `write(2)`.
    pub fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let fd = self.write_fd.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: writing one byte from a static buffer to a file descriptor this value owns;
            // `write` is async-signal-safe. A full pipe (EAGAIN) is fine: it is readable already.
            unsafe { nix::libc::write(fd, b"x".as_ptr().cast(), 1) };
        }
    }

    /// A file descriptor that polls readable once the stop is requested (`None` if no pipe could
    /// be made; then waiters fall back to checking [`Stop::is_set`] now and then).
    pub fn waker(&self) -> Option<BorrowedFd<'_>> {
        let pipe = self.pipe.get_or_init(|| {
            let (read, write) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).ok()?;
            self.write_fd.store(write.as_raw_fd(), Ordering::SeqCst);
            // A stop requested before the pipe existed must still wake the first poll.
            if self.is_set() {
                self.set();
            }
            Some((read, write))
        });
        pipe.as_ref().map(|(read, _)| {
            use std::os::fd::AsFd;
            read.as_fd()
        })
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

/// Set once a stopping signal arrived.
pub static STOP: Stop = Stop::new();

/// The signals that stop a run.
const STOPPING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The number of the first stopping signal (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: nix::libc::c_int) {
    let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    STOP.set();
}

/// Installs the handlers for SIGINT, SIGTERM and SIGHUP.
pub fn install() -> anyhow::Result<()> {
    // Made before any handler can run: the handler itself must not create it.
    let _ = STOP.waker();
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for signal in STOPPING {
        // SAFETY: the handler only stores to atomics and writes to a pipe, both async-signal-safe.
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
        assert_eq!(exit_status(Signal::SIGHUP), 129);
        assert_eq!(exit_status(Signal::SIGINT), 130);
        assert_eq!(exit_status(Signal::SIGTERM), 143);
    }

    #[test]
    fn the_waker_becomes_readable_when_the_stop_is_set() {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let stop = Stop::new();
        let readable = |stop: &Stop| {
            let mut fds = [PollFd::new(stop.waker().unwrap(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
        };
        assert!(!readable(&stop) && !stop.is_set());
        stop.set();
        assert!(readable(&stop) && stop.is_set());
        // It stays readable: every waiter sees it.
        assert!(readable(&stop));
        // Set before the pipe exists: the first poll still wakes.
        let early = Stop::new();
        early.set();
        assert!(readable(&early));
    }
}
