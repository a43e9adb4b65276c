//! One run at a time per root: an exclusive `flock` on `ROOT/var/lib/dkms-hook/lock`.
//!
//! dkms has no locking of its own, and two runs building into the same dkms tree corrupt it.
//! A second run waits for the first, saying once which process holds the lock (the holder
//! writes its PID into the file), and gives up after a timeout. The lock lives on the root's
//! persistent file system, not in `/run`: `arch-chroot` mounts a fresh `/run` inside the chroot,
//! and a run inside it must lock the same file as a `--root` run from outside.
//!
//! A `flock` belongs to the open file, which every dkms and depmod the holder starts keeps open
//! (see `process`): the kernel releases the lock only when the holder *and* all of them are gone,
//! so a run killed with SIGKILL cannot let the next run in while its dkms still builds. Nothing
//! ever unlocks explicitly; closing the last descriptor does. The PID in the file only matters
//! while the lock is held. `status` and `--dry-run` change nothing and take no lock.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::interrupt::Stop;

/// How often a waiting run tries again (a stop request wakes it at once).
const RETRY: Duration = Duration::from_millis(100);
/// How long a waiter waits for the holder to write its PID before telling the user anyway.
const NAME_WAIT: Duration = Duration::from_millis(500);

/// The held lock; dropping it closes this process's descriptor of it.
#[derive(Debug)]
pub struct Lock {
    file: File,
}

impl Lock {
    /// The descriptor that programs started under the lock keep open.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The process holding the lock, as far as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// Its command name (`/proc/PID/comm`), when it can be read.
    pub command: Option<String>,
    /// Whether that process still runs: if not, what it started (dkms, make) holds the lock.
    pub alive: bool,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.pid, &self.command) {
            (Some(pid), _) if !self.alive => write!(f, "the dkms of process {pid} (the process itself is gone)"),
            (Some(pid), Some(cmd)) => write!(f, "process {pid} ({cmd})"),
            (Some(pid), None) => write!(f, "process {pid}"),
            (None, _) => write!(f, "another process"),
        }
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("gave up after {} s waiting for {holder} to release {}: wait for it to finish, or raise lock_timeout in the configuration", .waited.as_secs(), .path.display())]
    TimedOut { path: PathBuf, holder: Holder, waited: Duration },
    #[error("stopped while waiting for the lock {}", .path.display())]
    Stopped { path: PathBuf },
    #[error("failed to lock {}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Takes the lock at `path` (creating it and its directory), waiting up to `timeout` for
/// another holder. `waiting` is called once, when the lock is busy; `stop` ends the wait.
pub fn acquire(path: &Path, timeout: Duration, stop: &Stop, waiting: impl FnOnce(&Holder)) -> Result<Lock, LockError> {
    let io = |source: std::io::Error| LockError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file =
        File::options().read(true).write(true).create(true).truncate(false).mode(0o644).open(path).map_err(io)?;
    let started = Instant::now();
    let mut waiting = Some(waiting);
    loop {
        match file.try_lock() {
            Ok(()) => {
                // Tell a later waiter who we are.
                let pid = format!("{}\n", std::process::id());
                let written =
                    file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(pid.as_bytes()));
                written.map_err(io)?;
                return Ok(Lock { file });
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder = holder(&mut file);
        // The holder writes its PID just after taking the lock: give it a moment before
        // telling the user who it is.
        if holder.pid.is_some() || started.elapsed() >= NAME_WAIT {
            if let Some(tell) = waiting.take() {
                tell(&holder);
            }
        }
        if stop.is_set() {
            return Err(LockError::Stopped { path: path.to_path_buf() });
        }
        if started.elapsed() >= timeout {
            return Err(LockError::TimedOut { path: path.to_path_buf(), holder, waited: started.elapsed() });
        }
        pause(stop, RETRY.min(timeout.saturating_sub(started.elapsed())));
    }
}

/// Sleeps for `time`, or until a stop is requested.
fn pause(stop: &Stop, time: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let timeout = PollTimeout::try_from(time.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
    match stop.waker() {
        Some(waker) => {
            let _ = poll(&mut [PollFd::new(waker, PollFlags::POLLIN)], timeout);
        }
        None => std::thread::sleep(time),
    }
}

/// Reads the holder's PID from the lock file.
fn holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    let pid = text.trim().parse::<u32>().ok();
    let alive = pid.is_none_or(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
    let command = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    Holder { pid, command, alive }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_waits_names_the_holder_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/dkms-hook.lock");
        let stop = Stop::new();
        let first = acquire(&path, Duration::ZERO, &stop, |_| panic!("the lock is free")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", std::process::id()));

        let mut told = None;
        let err = acquire(&path, Duration::from_millis(250), &stop, |h| told = Some(h.clone())).unwrap_err();
        let told = told.expect("the waiter is told once");
        assert_eq!(told.pid, Some(std::process::id()));
        assert!(matches!(err, LockError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains(&format!("process {}", std::process::id())), "{err}");

        drop(first);
        acquire(&path, Duration::ZERO, &stop, |_| panic!("released")).unwrap();
    }

    #[test]
    fn stop_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let never = Stop::new();
        let _held = acquire(&path, Duration::ZERO, &never, |_| {}).unwrap();
        let stop = Stop::new();
        stop.set();
        let err = acquire(&path, Duration::from_secs(60), &stop, |_| {}).unwrap_err();
        assert!(matches!(err, LockError::Stopped { .. }), "{err}");
    }
}
