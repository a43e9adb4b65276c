//! One run at a time per root: an exclusive `flock` on `ROOT/run/dkms-hook.lock`.
//!
//! dkms has no locking of its own, and two runs building into the same dkms tree corrupt it.
//! A second run waits for the first, saying once which process holds the lock (the holder
//! writes its PID into the file), and gives up after a timeout. The kernel releases a `flock`
//! when its holder dies, so a crashed run never leaves a stale lock; the PID in the file only
//! matters while the lock is held. `status` and `--dry-run` change nothing and take no lock.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// How often a waiting run tries again.
const POLL: Duration = Duration::from_millis(100);
/// How long a waiter waits for the holder to write its PID before telling the user anyway.
const NAME_WAIT: Duration = Duration::from_millis(500);

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    _file: Flock<File>,
}

/// The process holding the lock, as far as its file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// Its command name (`/proc/PID/comm`), when it can be read.
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.pid, &self.command) {
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
pub fn acquire(
    path: &Path,
    timeout: Duration,
    stop: &AtomicBool,
    waiting: impl FnOnce(&Holder),
) -> Result<Lock, LockError> {
    let io = |source: std::io::Error| LockError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file =
        File::options().read(true).write(true).create(true).truncate(false).mode(0o644).open(path).map_err(io)?;
    let started = Instant::now();
    let mut waiting = Some(waiting);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                // Tell a later waiter who we are.
                let pid = format!("{}\n", std::process::id());
                let written =
                    locked.set_len(0).and_then(|()| locked.rewind()).and_then(|()| locked.write_all(pid.as_bytes()));
                written.map_err(io)?;
                return Ok(Lock { _file: locked });
            }
            Err((f, Errno::EWOULDBLOCK)) => file = f,
            Err((_, errno)) => return Err(io(errno.into())),
        }
        let holder = holder(&mut file);
        // The holder writes its PID just after taking the lock: give it a moment before
        // telling the user who it is.
        if holder.pid.is_some() || started.elapsed() >= NAME_WAIT {
            if let Some(tell) = waiting.take() {
                tell(&holder);
            }
        }
        if stop.load(Ordering::SeqCst) {
            return Err(LockError::Stopped { path: path.to_path_buf() });
        }
        if started.elapsed() >= timeout {
            return Err(LockError::TimedOut { path: path.to_path_buf(), holder, waited: started.elapsed() });
        }
        std::thread::sleep(POLL);
    }
}

/// Reads the holder's PID from the lock file.
fn holder(file: &mut File) -> Holder {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    let pid = text.trim().parse::<u32>().ok();
    let command = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    Holder { pid, command }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_waits_names_the_holder_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/dkms-hook.lock");
        let stop = AtomicBool::new(false);
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
        let never = AtomicBool::new(false);
        let _held = acquire(&path, Duration::ZERO, &never, |_| {}).unwrap();
        let stop = AtomicBool::new(true);
        let err = acquire(&path, Duration::from_secs(60), &stop, |_| {}).unwrap_err();
        assert!(matches!(err, LockError::Stopped { .. }), "{err}");
    }
}
