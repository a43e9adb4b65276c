//! The one place where dkms-hook starts other programs: dkms and depmod for jobs, bash reading a
//! dkms.conf, decompressors for the vermagic check. Every program runs the same way:
//!
//! - stdin closed, in its own process group, so it can be stopped as a whole (dkms runs make,
//!   which runs gcc…), and whatever of the group is still there when the program exits is killed
//!   (a background `sleep` of dkms's progress loop, something a dkms.conf started);
//! - output captured (merged like a terminal shows it, or stdout and stderr apart), each stream
//!   capped, read by threads so a chatty program never blocks on a full pipe; output a process
//!   that left the group keeps open is given up on after [`DRAIN`];
//! - waited for without periodic wake-ups: a pidfd and the stop request's pipe are polled with the
//!   time limit as the timeout. A time limit or a stop request sends SIGTERM to the group, and
//!   SIGKILL after [`KILL_GRACE`];
//! - optionally holding the run's lock: the lock's file descriptor stays open in the program (and
//!   everything it starts), so even if dkms-hook dies by SIGKILL, no later run takes the lock while
//!   a dkms or make it started may still write to the dkms tree;
//! - optionally in a private mount namespace with one directory mounted where the program expects
//!   it ([`PrivateMount`]): the guard's builds see an incoming kernel's headers at
//!   `/lib/modules/K/build` before pacman has installed them, and nobody else sees anything.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::interrupt::Stop;

/// How long a stopped program gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long output may stay open after the program exited and its group was killed.
pub const DRAIN: Duration = Duration::from_secs(2);
/// Without a pidfd (kernels before 5.3), how often the program is checked.
const FALLBACK_CHECK: Duration = Duration::from_millis(50);

/// How to capture a program's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// stdout and stderr into one stream (`Finished::stdout`), in the order written.
    Merged,
    /// stdout and stderr apart.
    Separate,
}

/// How a program runs.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub output: Output,
    /// Keep at most this many bytes of each stream (the rest is read and dropped).
    pub cap: usize,
    /// Stop the program after this long.
    pub timeout: Option<Duration>,
    /// Stop the program as soon as this is set.
    pub stop: &'a Stop,
    /// A file descriptor the program inherits (the run's lock); everything else is close-on-exec.
    pub keep_open: Option<RawFd>,
    /// Run the program in a private mount namespace with this mount.
    pub mount: Option<&'a PrivateMount>,
}

impl<'a> Options<'a> {
    /// Merged output, no cap beyond 64 MiB, no time limit, stopping with `stop`.
    pub fn new(stop: &'a Stop) -> Self {
        Options { output: Output::Merged, cap: 64 << 20, timeout: None, stop, keep_open: None, mount: None }
    }
}

/// A directory shown at another path to one program only: in a mount namespace of its own, a
/// fresh tmpfs covers `cover`, the directories down to `target` are made in it, and `source` is
/// bound at `target`. Nothing of it is visible outside the program, and it all goes when the
/// program (and whatever it started) exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateMount {
    source: CString,
    cover: CString,
    /// The directories to make below `cover`, parents first; the last is the target.
    dirs: Vec<CString>,
    /// Further directories to make below `cover` (parents first), then files in them.
    more_dirs: Vec<CString>,
    /// Each file's path and contents.
    files: Vec<(CString, Vec<u8>)>,
}

impl PrivateMount {
    /// `target` must be below `cover`.
    pub fn new(source: &Path, cover: &Path, target: &Path) -> std::io::Result<PrivateMount> {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::other(format!("{p:?} holds a NUL")))
        };
        let below = target
            .strip_prefix(cover)
            .map_err(|_| std::io::Error::other(format!("{} is not below {}", target.display(), cover.display())))?;
        let mut dirs = Vec::new();
        let mut at = cover.to_path_buf();
        for part in below.components() {
            at.push(part);
            dirs.push(c(&at)?);
        }
        if dirs.is_empty() {
            return Err(std::io::Error::other(format!("{} is {}", target.display(), cover.display())));
        }
        Ok(PrivateMount { source: c(source)?, cover: c(cover)?, dirs, more_dirs: Vec::new(), files: Vec::new() })
    }

    /// Also shows a file at `path` (below `cover`, not below the target) holding `contents`: a
    /// placeholder for what the program looks for in the covered directory.
    pub fn with_file(mut self, path: &Path, contents: &[u8]) -> std::io::Result<PrivateMount> {
        use std::os::unix::ffi::OsStrExt;
        let cover = Path::new(std::ffi::OsStr::from_bytes(self.cover.as_bytes())).to_path_buf();
        let below = path
            .strip_prefix(&cover)
            .map_err(|_| std::io::Error::other(format!("{} is not below {}", path.display(), cover.display())))?;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::other(format!("{p:?} holds a NUL")))
        };
        let mut at = cover.clone();
        let parts: Vec<_> = below.components().collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at.push(part);
            let dir = c(&at)?;
            if !self.dirs.contains(&dir) && !self.more_dirs.contains(&dir) {
                self.more_dirs.push(dir);
            }
        }
        self.files.push((c(path)?, contents.to_vec()));
        Ok(self)
    }

    /// Sets the mount up in the calling process. Runs between fork and exec: only system calls,
    /// no allocation.
    fn enter(&self) -> std::io::Result<()> {
        use nix::libc;
        let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) };
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY: plain system calls on NUL-terminated strings this struct owns.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted here propagates back to the system's namespace.
            check(libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.cover.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755".as_ptr().cast(),
            ))?;
            for dir in &self.dirs {
                check(libc::mkdir(dir.as_ptr(), 0o755))?;
            }
            let target = self.dirs.last().map_or(self.cover.as_ptr(), |d| d.as_ptr());
            check(libc::mount(self.source.as_ptr(), target, none, libc::MS_BIND | libc::MS_REC, std::ptr::null()))?;
            for dir in &self.more_dirs {
                check(libc::mkdir(dir.as_ptr(), 0o755))?;
            }
            for (file, contents) in &self.files {
                let fd = libc::open(file.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // A fresh tmpfs takes a small file in one write.
                let written = libc::write(fd, contents.as_ptr().cast(), contents.len());
                let error = std::io::Error::last_os_error();
                libc::close(fd);
                if written < 0 {
                    return Err(error);
                }
                if written as usize != contents.len() {
                    return Err(std::io::Error::other("short write"));
                }
            }
            Ok(())
        }
    }
}

/// A program that ran.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: ExitStatus,
    /// stdout, or all output with [`Output::Merged`].
    pub stdout: Vec<u8>,
    /// stderr with [`Output::Separate`].
    pub stderr: Vec<u8>,
    /// Stopped because it ran longer than the time limit.
    pub timed_out: bool,
    /// Stopped because a stop was requested.
    pub interrupted: bool,
    /// Something it started left its process group and kept the output open: what it wrote after
    /// [`DRAIN`] is lost.
    pub escaped: bool,
}

impl Finished {
    /// The exit code, `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The captured output as text (stdout, or everything with [`Output::Merged`]).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `cmd` as described by `opts` and waits for it. An error means it could not be started.
pub fn run(mut cmd: Command, opts: &Options) -> std::io::Result<Finished> {
    cmd.stdin(Stdio::null()).process_group(0);
    let mut readers = Vec::new();
    match opts.output {
        Output::Merged => {
            let (reader, writer) = std::io::pipe()?;
            cmd.stdout(writer.try_clone()?).stderr(writer);
            readers.push(Box::new(reader) as Box<dyn Read + Send>);
        }
        Output::Separate => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
    }
    if let Some(fd) = opts.keep_open {
        // SAFETY: only fcntl(2), which is async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let flags = nix::libc::fcntl(fd, nix::libc::F_GETFD);
                if flags >= 0 {
                    nix::libc::fcntl(fd, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC);
                }
                Ok(())
            })
        };
    }
    if let Some(mount) = opts.mount {
        let mount = mount.clone();
        // SAFETY: `enter` makes only system calls between fork and exec (see there).
        unsafe { cmd.pre_exec(move || mount.enter()) };
    }
    let mut child = cmd.spawn()?;
    // The parent's copies of the write ends go with `cmd`: reading ends when the group exits.
    drop(cmd);
    if let Some(out) = child.stdout.take() {
        readers.push(Box::new(out));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(Box::new(err));
    }
    let streams: Vec<Stream> = readers.into_iter().map(|r| Stream::read(r, opts.cap)).collect();

    let group = Pid::from_raw(child.id() as i32);
    let waited = wait(&mut child, group, opts);
    // Whatever of the group is left must not outlive the program.
    let _ = killpg(group, Signal::SIGKILL);
    let (status, timed_out, interrupted) = waited?;
    let deadline = Instant::now() + DRAIN;
    let mut escaped = false;
    let mut outputs = streams.into_iter().map(|s| {
        let (bytes, complete) = s.finish(deadline);
        escaped |= !complete;
        bytes
    });
    let stdout = outputs.next().unwrap_or_default();
    let stderr = outputs.next().unwrap_or_default();
    Ok(Finished { status, stdout, stderr, timed_out, interrupted, escaped })
}

/// Waits for `child`, stopping its group on a time limit or a stop request. Returns its status
/// and whether it was stopped for the time limit or the request.
fn wait(child: &mut std::process::Child, group: Pid, opts: &Options) -> std::io::Result<(ExitStatus, bool, bool)> {
    let pidfd = pidfd_open(child.id());
    let started = Instant::now();
    let (mut timed_out, mut interrupted) = (false, false);
    let mut term_sent: Option<Instant> = None;
    let mut kill_sent = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, timed_out, interrupted));
        }
        let now = Instant::now();
        let over = opts.timeout.is_some_and(|t| now.duration_since(started) >= t);
        match term_sent {
            None if over || opts.stop.is_set() => {
                timed_out = over;
                interrupted = !over;
                let _ = killpg(group, Signal::SIGTERM);
                term_sent = Some(now);
                continue;
            }
            Some(at) if !kill_sent && now.duration_since(at) >= KILL_GRACE => {
                let _ = killpg(group, Signal::SIGKILL);
                kill_sent = true;
                continue;
            }
            _ => {}
        }
        // Sleep until the program exits, a stop is requested (only worth waking for before the
        // group was told to stop), or the next deadline.
        let deadline = match term_sent {
            None => opts.timeout.map(|t| started + t),
            Some(_) if kill_sent => None,
            Some(at) => Some(at + KILL_GRACE),
        };
        let mut left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let mut fds = Vec::with_capacity(2);
        match &pidfd {
            Some(fd) => fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
            None => left = Some(left.map_or(FALLBACK_CHECK, |l| l.min(FALLBACK_CHECK))),
        }
        if term_sent.is_none() {
            match opts.stop.waker() {
                Some(waker) => fds.push(PollFd::new(waker, PollFlags::POLLIN)),
                None => left = Some(left.map_or(FALLBACK_CHECK, |l| l.min(FALLBACK_CHECK))),
            }
        }
        let timeout = match left {
            None => PollTimeout::NONE,
            // Rounded up, so a deadline is never missed by waking just before it.
            Some(l) => PollTimeout::try_from(l.as_millis().saturating_add(1).min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX),
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A file descriptor that polls readable when process `pid` exits (Linux ≥ 5.3).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    // SAFETY: a non-negative result is a file descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// One output stream, read on its own thread into a shared buffer.
struct Stream {
    buffer: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Stream {
    fn read(mut pipe: Box<dyn Read + Send>, cap: usize) -> Stream {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let sink = Arc::clone(&buffer);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut kept = sink.lock().unwrap_or_else(|e| e.into_inner());
                        let room = cap.saturating_sub(kept.len());
                        kept.extend_from_slice(&chunk[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
        Stream { buffer, done }
    }

    /// What was read by `deadline`, and whether the stream ended by then.
    fn finish(self, deadline: Instant) -> (Vec<u8>, bool) {
        let complete = self.done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok();
        let bytes = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|e| e.into_inner()));
        (bytes, complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn captures_merged_and_separate_output_and_the_exit_code() {
        let stop = Stop::new();
        let done = run(sh("echo out; echo err >&2; exit 3"), &Options::new(&stop)).unwrap();
        assert_eq!((done.code(), done.text().as_str()), (Some(3), "out\nerr\n"));
        let opts = Options { output: Output::Separate, cap: 2, ..Options::new(&stop) };
        let done = run(sh("echo out; echo err >&2"), &opts).unwrap();
        assert_eq!((done.stdout.as_slice(), done.stderr.as_slice()), (&b"ou"[..], &b"er"[..]));
        assert!(!done.timed_out && !done.interrupted && !done.escaped);
    }

    #[test]
    fn a_time_limit_stops_the_whole_group() {
        let stop = Stop::new();
        let opts = Options { timeout: Some(Duration::from_millis(200)), ..Options::new(&stop) };
        let started = Instant::now();
        // The grandchild would keep the output open for a minute if the group were not stopped.
        let done = run(sh("sleep 60 & sleep 60"), &opts).unwrap();
        assert!(done.timed_out && !done.interrupted && done.code().is_none(), "{done:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    #[test]
    fn a_stop_request_wakes_the_wait_at_once() {
        let stop = Arc::new(Stop::new());
        let setter = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            setter.set();
        });
        let started = Instant::now();
        let done = run(sh("sleep 60"), &Options::new(&stop)).unwrap();
        assert!(done.interrupted && !done.timed_out, "{done:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    }

    #[test]
    fn output_kept_open_by_an_escaped_process_is_given_up_on() {
        let stop = Stop::new();
        let started = Instant::now();
        let done = run(sh("echo before; setsid sleep 5 & sleep 0.3; exit 0"), &Options::new(&stop)).unwrap();
        assert!(done.escaped && done.text().starts_with("before"), "{done:?}");
        assert!(started.elapsed() < DRAIN + Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn only_the_kept_descriptor_is_inherited() {
        let stop = Stop::new();
        let kept = std::fs::File::open("/dev/null").unwrap();
        let other = std::fs::File::open("/dev/null").unwrap();
        let (k, o) = (kept.as_raw_fd(), other.as_raw_fd());
        let script = format!("[ -e /proc/self/fd/{k} ] && echo kept; [ -e /proc/self/fd/{o} ] && echo other; true");
        let opts = Options { keep_open: Some(k), ..Options::new(&stop) };
        assert_eq!(run(sh(&script), &opts).unwrap().text(), "kept\n");
        // And it stays close-on-exec in this process for every other program.
        assert_eq!(run(sh(&script), &Options::new(&stop)).unwrap().text(), "");
    }
}
