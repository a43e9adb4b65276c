//! The name of the running pacman transaction: what the guard's builds are handed over by
//! (`prebuilt`), so that only the hooks of the transaction they were made for use them.
//!
//! A hook is a child of the process that runs the transaction (pacman, or a long-lived front end
//! such as pamac-daemon or packagekitd). That process's id and start time name it, but a
//! long-lived front end runs many transactions under the same ones. What tells its transactions
//! apart is libalpm's lock: `alpm_trans_init` creates `DBPATH/db.lck` (`open(O_CREAT | O_EXCL)`,
//! `_alpm_handle_lock` in handle.c), keeps it open for the whole transaction and deletes it in
//! `alpm_trans_release`. Each transaction's lock file is a new file: its device, inode and
//! modification time (it is never written to: the time it was made, in nanoseconds) name it.
//!
//! The lock is looked for first among the open files of the front end (`/proc/PID/fd`), which
//! also finds it when the database lies outside the root the hook runs in, and finds the front end
//! when the hook's command runs through a shell (`/bin/sh -c …`): the front end is the nearest
//! ancestor holding a `db.lck` open (of several, the one at the database path the hook sees,
//! `Layout::dbpath`). Failing that (the front end's open files cannot be read), the file at that
//! database path counts.
//!
//! Without any lock file (dkms-hook run by hand or by a test, no libalpm transaction around it)
//! the name is the parent's id and start time alone: the guard and the install hook run by hand
//! from one shell share it, as before. A missing lock does not mean "no hand-over": the front ends
//! that commit transactions hold the lock while they do (libalpm leaves it out only when asked to,
//! `ALPM_TRANS_FLAG_NOLOCK`, which no front end uses to commit), so a run that finds none has no
//! other transaction of its front end to be confused with; and a name without a lock never equals
//! one with a lock, so an aborted transaction's builds never go to a run by hand. The hand-over's
//! other checks (the sources' digest, the headers package, the signing certificate) hold as ever.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::domain::Layout;

/// The lock file's name in the database directory (libalpm's alpm.c).
const LOCK_FILE: &str = "db.lck";

/// How far up from the parent the front end is looked for: the hook itself (0), or a shell
/// running it (1); a little more for wrappers of wrappers.
const ANCESTORS: usize = 4;

/// The process that runs the transaction this process belongs to: the nearest ancestor (from the
/// parent up) that holds libalpm's lock open, else the parent.
pub fn frontend_pid() -> i32 {
    frontend(nix::unistd::getppid().as_raw(), None).0
}

/// The name of the running transaction (see the module documentation): `PID.START` of the front
/// end, followed by `.lock-DEV-INO-MTIME` when a lock file is found. `None` when the front end's
/// process cannot be read.
pub fn current(layout: &Layout) -> Option<String> {
    let visible = layout.dbpath.join(LOCK_FILE);
    let (pid, lock) = frontend(nix::unistd::getppid().as_raw(), Some(&visible));
    let lock = lock.or_else(|| identity(&visible).map(|l| l.name));
    name(pid, lock.as_deref())
}

/// The front end from `parent` up, with the identity of the lock it holds: the one at `visible`
/// when it holds that one (a front end may hold the locks of several databases), else any.
fn frontend(parent: i32, visible: Option<&Path>) -> (i32, Option<String>) {
    let visible = visible.and_then(identity);
    let mut pid = parent;
    for _ in 0..ANCESTORS {
        let held = held_locks(pid);
        let chosen = held.iter().find(|l| visible.as_ref().is_some_and(|v| v.file == l.file)).or(held.first());
        if let Some(lock) = chosen {
            return (pid, Some(lock.name.clone()));
        }
        match parent_of(pid) {
            Some(up) if up > 1 => pid = up,
            _ => break,
        }
    }
    (parent, None)
}

/// `PID.START`, and the lock's identity after it.
fn name(pid: i32, lock: Option<&str>) -> Option<String> {
    let start = start_time(pid)?;
    Some(match lock {
        Some(lock) => format!("{pid}.{start}.lock-{lock}"),
        None => format!("{pid}.{start}"),
    })
}

/// One lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lock {
    /// Device and inode: which file it is now.
    file: (u64, u64),
    /// `DEV-INO-MTIME_NS`: which file it is among all that were ever made there.
    name: String,
}

/// The `db.lck` files that process `pid` holds open.
fn held_locks(pid: i32) -> Vec<Lock> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.file_name() == Some(LOCK_FILE.as_ref())))
        .filter_map(|fd| identity(&fd.path()))
        .collect()
}

/// The file at `path` (followed if a link, as `/proc/PID/fd/N` is).
fn identity(path: &Path) -> Option<Lock> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    Some(Lock { file: (meta.dev(), meta.ino()), name: format!("{}-{}-{mtime}", meta.dev(), meta.ino()) })
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and
/// parentheses): field 3 (state) first.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Field 22 of `/proc/PID/stat`: when the process started (unique with the pid while the machine
/// runs).
fn start_time(pid: i32) -> Option<String> {
    stat_fields(pid)?.get(19).cloned()
}

/// Field 4 of `/proc/PID/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that hold locks in this process, one at a time: each looks at this process's
    /// open files.
    static HOLDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn name_of(lock: &Path) -> Option<String> {
        identity(lock).map(|l| l.name)
    }

    #[test]
    fn a_process_without_a_lock_is_named_by_its_id_and_start() {
        let me = std::process::id() as i32;
        let id = name(me, None).unwrap();
        assert!(id.starts_with(&format!("{me}.")) && !id.contains("lock"), "{id}");
        assert_eq!(name(me, None), Some(id));
        assert_eq!(name(i32::MAX, None), None);
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw()));
    }

    #[test]
    fn each_lock_file_is_another_transaction() {
        let _one = HOLDING.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        let me = std::process::id() as i32;
        assert_eq!(identity(&lock), None);

        // The front end holds its lock open: found among its files, whatever the path.
        let file = std::fs::File::create(&lock).unwrap();
        let first = name_of(&lock).unwrap();
        assert_eq!(frontend(me, None), (me, Some(first.clone())));
        let named = name(me, Some(&first)).unwrap();
        assert!(named.starts_with(&format!("{me}.")) && named.ends_with(&format!(".lock-{first}")), "{named}");

        // Released and taken again by the same process: another transaction, even where the
        // file system gives the new file the old inode.
        drop(file);
        std::fs::remove_file(&lock).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let _file = std::fs::File::create(&lock).unwrap();
        let second = frontend(me, None).1.unwrap();
        assert_eq!(Some(&second), name_of(&lock).as_ref());
        assert_ne!(first, second);
        assert_ne!(name(me, Some(&first)), name(me, Some(&second)));
        assert_ne!(name(me, None), name(me, Some(&second)));
    }

    #[test]
    fn of_several_locks_the_one_of_the_database_the_hook_sees_counts() {
        let _one = HOLDING.lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (lock_a, lock_b) = (a.path().join(LOCK_FILE), b.path().join(LOCK_FILE));
        let _files = (std::fs::File::create(&lock_a).unwrap(), std::fs::File::create(&lock_b).unwrap());
        let me = std::process::id() as i32;
        assert_eq!(frontend(me, Some(&lock_a)).1, name_of(&lock_a));
        assert_eq!(frontend(me, Some(&lock_b)).1, name_of(&lock_b));
    }

    #[test]
    fn the_front_end_is_found_above_a_shell() {
        let _one = HOLDING.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        let _file = std::fs::File::create(&lock).unwrap();
        // This process holds the lock, as a front end does; its child (a shell running the hook's
        // command, say) does not: the walk from the child finds this process.
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let found = frontend(child.id() as i32, None);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, (std::process::id() as i32, name_of(&lock)));
        assert!(found.1.is_some());
    }
}
