//! The real-transaction tier's harness. A [`Root`] is an overlayfs view of the whole machine in which
//! the real pacman 7.1 installs, upgrades and removes hand-made Arch packages ([`packages`]); pacman
//! runs the project's own `hooks/*.hook`, chrooted into the root, and they run the dkms-hook binary
//! that cargo built for this test, which runs the real dkms against real kernel headers.
//!
//! Invariants: every write lands in the overlay's upper directory, so the host is never changed; a
//! root is unmounted and deleted when dropped, also when a test panics, and nothing is deleted while
//! anything is still mounted below it (the root has the host's /dev inside it). Roots are made one at
//! a time ([`SERIAL`]): a module build already uses both cores of the CI machine.
//!
//! A scenario that leaves modules installed ends with the boot check ([`boot`]): each kernel of the
//! root boots under QEMU and loads what dkms-hook installed for it.
//!
//! Where the tier cannot run (not root, no overlayfs, no pacman 7.1, headers, kernel images, QEMU or
//! busybox) a test follows the common skip rule (`tests/common/skip.rs`): it fails under CI and
//! reports itself skipped elsewhere.
//!
//! `DKMS_HOOK_REAL_BIN=/path/to/program` replaces the built binary inside the root (e.g. with a script
//! that echoes its stdin, to see the targets pacman writes). `DKMS_HOOK_REAL_KEEP=1` unmounts roots
//! but keeps their directories (until the next run), so `upper/` shows every file a test wrote.

#![allow(dead_code)]

pub mod boot;
pub mod booted;
pub mod packages;
#[path = "../common/skip.rs"]
pub mod skip;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

#[allow(unused_imports)]
pub use boot::Boot;
pub use packages::*;

/// Two tests for each `scenario => test_with_dkms_3_0, test_with_dkms_3_2;`: the scenario
/// (a function taking the [`Dkms`] to run) once with each dkms.
#[allow(unused_macros)]
macro_rules! for_each_dkms {
    ($($scenario:ident => $v30:ident, $v32:ident;)*) => {$(
        #[test]
        fn $v30() {
            $scenario(Dkms::V3_0)
        }

        #[test]
        fn $v32() {
            $scenario(Dkms::V3_2)
        }
    )*};
}

/// The repository: hooks, scripts and test module sources are read from here.
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The shell helper shared with `scripts/demo`.
const HELPER: &str = "scripts/lib/overlay-root.sh";
/// What pacman prints when a hook exits non-zero.
pub const HOOK_FAILED: &str = "command failed to execute correctly";

/// One root at a time: see the module doc.
static SERIAL: Mutex<()> = Mutex::new(());

/// The dkms that runs inside the root as `/usr/sbin/dkms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dkms {
    /// Debian 12's dkms 3.0.10, the host's own.
    V3_0,
    /// dkms 3.2.2, unpacked by scripts/setup into `.deps/dkms-3.2.2` (`DKMS_HOOK_DKMS_322`).
    V3_2,
}

impl Dkms {
    /// The script to copy over `/usr/sbin/dkms` in the root; `None` keeps the host's.
    fn script(self) -> Option<PathBuf> {
        match self {
            Dkms::V3_0 => None,
            Dkms::V3_2 => Some(
                other_dkms()
                    .or_else(|| std::env::var_os("DKMS_HOOK_DKMS_322"))
                    .map(PathBuf::from)
                    .unwrap_or_else(|| Path::new(REPO).join(".deps/dkms-3.2.2/usr/sbin/dkms")),
            ),
        }
    }

    /// What `dkms --version` prints after `dkms-`.
    fn version(self) -> &'static str {
        match self {
            Dkms::V3_0 => "3.0.10",
            Dkms::V3_2 => "3.2.2",
        }
    }

    /// The version of the file-less `dkms` package put in the root's pacman DB.
    pub fn package_version(self) -> &'static str {
        match self {
            Dkms::V3_0 => "3.0.10-1",
            Dkms::V3_2 => "3.2.2-1",
        }
    }
}

/// `DKMS_HOOK_DKMS_OTHER=/path/to/dkms` runs the dkms 3.2 scenarios with another dkms script (e.g.
/// a dkms 3.4 installed by hand with `make install DESTDIR=…`); its version is printed, not checked.
fn other_dkms() -> Option<std::ffi::OsString> {
    std::env::var_os("DKMS_HOOK_DKMS_OTHER")
}

/// A finished command: its exit status and its stdout and stderr, merged.
pub struct Ran {
    pub status: ExitStatus,
    pub output: String,
}

impl Ran {
    pub fn text(&self) -> &str {
        &self.output
    }
}

/// PATH and LD_LIBRARY_PATH with the project-local pacman 7.1 first (what `. scripts/env` does), so
/// the tier runs the same whether or not the caller sourced scripts/env.
fn tool_env(cmd: &mut Command) -> &mut Command {
    let deps = Path::new(REPO).join(".deps/pacman");
    if deps.join("bin/pacman").exists() {
        for (var, dir) in [("PATH", deps.join("bin")), ("LD_LIBRARY_PATH", deps.join("lib"))] {
            let old = std::env::var_os(var).unwrap_or_default();
            if !std::env::split_paths(&old).any(|p| p == dir) {
                let mut paths = vec![dir];
                paths.extend(std::env::split_paths(&old));
                cmd.env(var, std::env::join_paths(paths).unwrap());
            }
        }
    }
    cmd
}

/// Runs FUNC from the shell helper with ARGS.
pub fn shell(func: &str, args: &[&str]) -> Ran {
    shell_env(func, args, &[])
}

/// [`shell`] with ENV added to the environment.
pub fn shell_env(func: &str, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let output = tool_env(
        Command::new("bash")
            .arg("-c")
            .arg(r#". "$0" && "$@" 2>&1"#)
            .arg(Path::new(REPO).join(HELPER))
            .arg(func)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null()),
    )
    .output()
    .expect("cannot run bash");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ran { status: output.status, output: text }
}

fn on_path(tool: &str) -> bool {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "command -v \"$0\" >/dev/null", tool]);
    tool_env(&mut cmd).status().map(|s| s.success()).unwrap_or(false)
}

/// Why the tier cannot run on this machine, if it cannot.
fn unavailable(dkms: Dkms) -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("it must run as root (it mounts overlay roots and pacman chroots into them)".into());
    }
    if !fs::read_to_string("/proc/filesystems").unwrap_or_default().contains("overlay") {
        return Some("the kernel has no overlayfs (not in /proc/filesystems)".into());
    }
    let tools = ["pacman", "bsdtar", "zstd", "modinfo", "depmod", "chroot", "make", "gcc", "openssl"];
    for tool in tools.into_iter().chain(["qemu-system-x86_64", "busybox"]) {
        if !on_path(tool) {
            return Some(format!("{tool} is not installed: run scripts/setup"));
        }
    }
    if !Path::new("/usr/sbin/dkms").is_file() {
        return Some("dkms is not installed at /usr/sbin/dkms: run scripts/setup".into());
    }
    for k in [LINUX, LINUX_CLOUD, LINUX_NEXT] {
        if !Path::new("/usr/src").join(format!("linux-headers-{}/Makefile", k.kver)).is_file() {
            return Some(format!("no Debian headers for {}: run scripts/setup", k.kver));
        }
        let image = debian_dir().join(format!("linux-image-{0}/boot/vmlinuz-{0}", k.kver));
        if !image.is_file() {
            return Some(format!("no Debian kernel image {}: run scripts/setup", image.display()));
        }
    }
    if let Some(m) = REAL_WORLD.iter().find(|m| !m.source_dir().join("dkms.conf").is_file()) {
        return Some(format!("no {} sources at {}: run scripts/setup", m.package, m.source_dir().display()));
    }
    match dkms.script() {
        Some(script) if !script.is_file() => {
            Some(format!("dkms {} is not at {}: run scripts/setup", dkms.version(), script.display()))
        }
        _ => None,
    }
}

/// The program installed as `/usr/bin/dkms-hook` in the root (with `dkms-hook-full` from beside
/// it as `/usr/lib/dkms-hook/dkms-hook-full`).
fn hook_bin() -> PathBuf {
    std::env::var_os("DKMS_HOOK_REAL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_dkms-hook")))
}

/// A pacman transaction's exit code and everything it printed.
pub struct Transaction {
    pub code: Option<i32>,
    pub output: String,
}

impl Transaction {
    pub fn assert_contains(&self, needle: &str) -> &Self {
        assert!(self.output.contains(needle), "pacman's output lacks {needle:?}:\n{}", self.output);
        self
    }

    pub fn assert_lacks(&self, needle: &str) -> &Self {
        assert!(!self.output.contains(needle), "pacman's output has {needle:?}:\n{}", self.output);
        self
    }

    /// No hook failed.
    pub fn assert_hooks_ok(&self) -> &Self {
        self.assert_lacks(HOOK_FAILED)
    }

    /// The lines in which pacman's hook parser complains about a hook file: what libalpm's hook.c
    /// says about a bad one (`error: hook FILE line N: invalid value V`, `Missing … in hook: FILE`, …).
    pub fn hook_file_errors(&self) -> Vec<&str> {
        self.output
            .lines()
            .filter(|l| {
                l.starts_with("error: hook ")
                    || l.starts_with("warning: hook ")
                    || l.contains(" in hook: ")
                    || l.contains("unable to run hook")
                    || l.contains("error while reading hook")
            })
            .collect()
    }

    /// pacman's hook parser accepted every hook file.
    pub fn assert_hook_files_accepted(&self) -> &Self {
        let bad = self.hook_file_errors();
        assert!(bad.is_empty(), "pacman rejects a hook file: {bad:?}\n{}", self.output);
        self
    }

    /// The line index of the first line containing every one of NEEDLES.
    pub fn line_of(&self, needles: &[&str]) -> Option<usize> {
        self.output.lines().position(|l| needles.iter().all(|n| l.contains(n)))
    }

    /// Some line contains every one of NEEDLES; returns its index.
    pub fn assert_line(&self, needles: &[&str]) -> usize {
        self.line_of(needles)
            .unwrap_or_else(|| panic!("no line of pacman's output has all of {needles:?}:\n{}", self.output))
    }
}

/// An overlay root; see the module doc.
pub struct Root {
    /// Holds `upper/`, `work/` and the mount point `root/`.
    dir: PathBuf,
    /// The mounted root pacman works on.
    pub root: PathBuf,
    pub dkms: Dkms,
    started: Instant,
    _serial: MutexGuard<'static, ()>,
}

impl Root {
    /// A prepared root (Arch layout, empty pacman DB with only `dkms`, empty dkms tree, the hooks and
    /// the binary installed, DKMS as `/usr/sbin/dkms`), or `None` when the tier cannot run here.
    pub fn new(dkms: Dkms) -> Option<Root> {
        Root::create(dkms, true)
    }

    /// Like [`Root::new`], but with neither the project's hooks nor its binary: they come with the
    /// dkms-hook package ([`Pkg::DkmsHook`]).
    pub fn new_without_hooks(dkms: Dkms) -> Option<Root> {
        Root::create(dkms, false)
    }

    fn create(dkms: Dkms, with_hooks: bool) -> Option<Root> {
        if !skip::can_run("the real-transaction tier", unavailable(dkms)) {
            return None;
        }
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!(
            "dkms-hook-real.{}.{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        ));
        remove_stale_roots();
        fs::create_dir_all(&dir).expect("cannot create the root's directory");
        let root = Root { root: dir.join("root"), dir, dkms, started: Instant::now(), _serial: serial };
        let ran = shell("ovr_mount", &[root.dir.to_str().unwrap()]);
        assert!(ran.status.success(), "cannot mount the overlay root:\n{}", ran.output);
        let (hooks, bin) = match with_hooks {
            true => (Path::new(REPO).join("hooks"), hook_bin()),
            false => (PathBuf::new(), PathBuf::new()),
        };
        let script = dkms.script().map(|s| s.to_str().unwrap().to_owned()).unwrap_or_default();
        let ran = shell(
            "ovr_prepare",
            &[root.root.to_str().unwrap(), hooks.to_str().unwrap(), bin.to_str().unwrap(), &script],
        );
        assert!(ran.status.success(), "cannot prepare the root:\n{}", ran.output);
        let version = root.chroot(&["dkms", "--version"]);
        assert!(
            version.output.contains(&format!("dkms-{}", dkms.version())) || other_dkms().is_some(),
            "`dkms --version` in the root is not {}: {}",
            dkms.version(),
            version.output
        );
        root.install(&[Pkg::DkmsStub(dkms)]);
        println!(
            "root {} ready in {:.1}s ({})",
            root.root.display(),
            root.started.elapsed().as_secs_f64(),
            version.output.trim()
        );
        Some(root)
    }

    /// PATH inside the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Runs ARGV chrooted into the root.
    pub fn chroot(&self, argv: &[&str]) -> Ran {
        let output = tool_env(Command::new("chroot").arg(&self.root).args(argv).stdin(Stdio::null()))
            .output()
            .expect("cannot run chroot");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ran { status: output.status, output: text }
    }

    /// Runs pacman on the root with ARGS; prints the command, its output and its duration (shown
    /// when a test fails, or with --nocapture).
    pub fn pacman(&self, args: &[&str]) -> Transaction {
        self.pacman_env(&[], args)
    }

    /// [`Root::pacman`] with ENV in pacman's environment (which its hooks inherit).
    pub fn pacman_env(&self, env: &[(&str, &str)], args: &[&str]) -> Transaction {
        let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        println!("\n$ {}pacman {}", shown.concat(), args.join(" "));
        let started = Instant::now();
        let mut all = vec![self.root.to_str().unwrap()];
        all.extend_from_slice(args);
        let ran = shell_env("ovr_pacman", &all, env);
        println!("{}[pacman exit {:?}, {:.1}s]", ran.output, ran.status.code(), started.elapsed().as_secs_f64());
        Transaction { code: ran.status.code(), output: ran.output }
    }

    /// [`Root::pacman`] with HOOKDIR, a directory outside the root, as pacman's user hook directory:
    /// a transaction into this root from a machine whose `/etc/pacman.d/hooks` is HOOKDIR (pacstrap).
    pub fn pacman_hookdir(&self, hookdir: &Path, args: &[&str]) -> Transaction {
        pacman_hookdir(&self.root, hookdir, args)
    }

    /// `pacman -U PKGS`, which must succeed (hooks may still fail).
    pub fn install(&self, pkgs: &[Pkg]) -> Transaction {
        let files: Vec<String> = pkgs.iter().map(|p| p.file().to_str().unwrap().to_owned()).collect();
        let mut args = vec!["-U"];
        args.extend(files.iter().map(String::as_str));
        let t = self.pacman(&args);
        assert_eq!(t.code, Some(0), "pacman -U failed:\n{}", t.output);
        t
    }

    /// `pacman -U PKGS` with the package files in the root's package cache, as pacman has them
    /// after downloading an upgrade: the guard, run inside the root, can read them to test-build.
    /// Must succeed (hooks may still fail).
    pub fn upgrade(&self, pkgs: &[Pkg]) -> Transaction {
        let cache = self.path("var/cache/pacman/pkg");
        let files: Vec<String> = pkgs
            .iter()
            .map(|p| {
                let file = p.file();
                let cached = cache.join(file.file_name().unwrap());
                fs::copy(&file, &cached).expect("cannot copy a package into the root's cache");
                cached.to_str().unwrap().to_owned()
            })
            .collect();
        let mut args = vec!["-U"];
        args.extend(files.iter().map(String::as_str));
        let t = self.pacman(&args);
        assert_eq!(t.code, Some(0), "pacman -U failed:\n{}", t.output);
        t
    }

    /// Serves PKGS from a local repository (`repo-add`, a `file://` server in the root's
    /// pacman.conf) for `pacman -Syu`: every package served so far stays in it.
    pub fn serve(&self, pkgs: &[Pkg]) {
        let repo = self.dir.join("repo");
        fs::create_dir_all(&repo).expect("cannot create the repository directory");
        let mut files = Vec::new();
        for p in pkgs {
            let file = p.file();
            let served = repo.join(file.file_name().unwrap());
            fs::copy(&file, &served).expect("cannot copy a package into the repository");
            files.push(served.to_str().unwrap().to_owned());
        }
        let db = repo.join("served.db.tar.gz");
        let mut cmd = Command::new("repo-add");
        cmd.arg("--quiet").arg(&db).args(&files);
        let out = tool_env(&mut cmd).output().expect("cannot run repo-add");
        assert!(out.status.success(), "repo-add failed: {}", String::from_utf8_lossy(&out.stderr));
        let conf = self.path("etc/pacman.conf");
        let text = fs::read_to_string(&conf).unwrap();
        if !text.contains("[served]") {
            fs::write(&conf, format!("{text}\n[served]\nServer = file://{}\n", repo.display())).unwrap();
        }
    }

    /// Puts a `make` in front of the real one (in `/usr/local/bin`, first in the hooks' PATH)
    /// that appends the arguments of each make dkms starts to `/var/log/make-calls` in the root:
    /// which builds ran, and in which dkms tree.
    pub fn record_make(&self) {
        let wrapper = self.path("usr/local/bin/make");
        fs::create_dir_all(wrapper.parent().unwrap()).unwrap();
        // Only the make that dkms starts, not the makes it starts in turn.
        let script = "#!/bin/bash\n[[ -z ${MAKELEVEL:-} ]] && printf '%s\\n' \"$*\" >>/var/log/make-calls\nexec /usr/bin/make \"$@\"\n";
        fs::write(&wrapper, script).unwrap();
        let ran = self.chroot(&["chmod", "0755", "/usr/local/bin/make"]);
        assert!(ran.status.success(), "{}", ran.output);
    }

    /// The make calls recorded since [`Root::record_make`] (and empties the record).
    pub fn make_calls(&self) -> Vec<String> {
        let file = self.path("var/log/make-calls");
        let calls = fs::read_to_string(&file).unwrap_or_default().lines().map(str::to_owned).collect();
        let _ = fs::write(&file, "");
        calls
    }

    /// Every entry below the root's DIRS with its kind, size and modification time: equal
    /// snapshots mean nothing there was created, deleted or written.
    pub fn snapshot(&self, dirs: &[&str]) -> BTreeMap<String, String> {
        use std::os::unix::fs::MetadataExt;
        let mut entries = BTreeMap::new();
        let mut stack: Vec<PathBuf> = dirs.iter().map(|d| self.path(d)).collect();
        while let Some(path) = stack.pop() {
            let Ok(meta) = fs::symlink_metadata(&path) else { continue };
            let rel = path.strip_prefix(&self.root).unwrap().display().to_string();
            let kind = if meta.is_dir() {
                stack.extend(list(&path).into_iter().map(|n| path.join(n)));
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else {
                format!("file {} bytes", meta.len())
            };
            entries.insert(rel, format!("{kind}, modified {}.{}", meta.mtime(), meta.mtime_nsec()));
        }
        entries
    }

    /// `pacman -Q NAME`'s version, if the package is installed.
    pub fn version_of(&self, name: &str) -> Option<String> {
        let t = self.pacman(&["-Q", name]);
        (t.code == Some(0)).then(|| t.output.split_whitespace().nth(1).unwrap_or_default().to_owned())
    }

    /// `pacman -R NAMES`, which must succeed (hooks may still fail).
    pub fn remove(&self, names: &[&str]) -> Transaction {
        let mut args = vec!["-R"];
        args.extend_from_slice(names);
        let t = self.pacman(&args);
        assert_eq!(t.code, Some(0), "pacman -R failed:\n{}", t.output);
        t
    }

    /// Installs each kernel's package and headers package in one transaction.
    pub fn install_kernels(&self, kernels: &[Kernel]) -> Transaction {
        let pkgs: Vec<Pkg> = kernels.iter().flat_map(|k| [k.pkg(), k.headers()]).collect();
        let t = self.install(&pkgs);
        t.assert_hooks_ok();
        t
    }

    /// Whether the root's pacman DB has package NAME installed.
    pub fn has_package(&self, name: &str) -> bool {
        self.pacman(&["-Q", name]).code == Some(0)
    }

    /// The kernel module directories `usr/lib/modules/*`.
    pub fn module_dirs(&self) -> BTreeSet<String> {
        list(&self.path("usr/lib/modules")).into_iter().collect()
    }

    /// Every module file below `usr/lib/modules/<kver>/` (outside `build/` and the kernel
    /// package's own `kernel/`), as `<kver>/<path>`, with the kernel its vermagic names.
    pub fn module_files(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        for kver in self.module_dirs() {
            let mut stack = vec![PathBuf::from(&kver)];
            while let Some(rel) = stack.pop() {
                let abs = self.path("usr/lib/modules").join(&rel);
                let meta = fs::symlink_metadata(&abs).unwrap();
                if meta.is_dir() {
                    for name in list(&abs) {
                        if rel.as_os_str() != kver.as_str() || (name != "build" && name != "kernel") {
                            stack.push(rel.join(name));
                        }
                    }
                } else if rel.file_name().unwrap().to_str().unwrap().contains(".ko") {
                    files.insert(rel.to_str().unwrap().to_owned(), vermagic(&abs));
                }
            }
        }
        files
    }

    /// What dkms has registered, built and installed, read from the root's dkms tree.
    pub fn dkms_tree(&self) -> DkmsTree {
        let mut tree = DkmsTree::default();
        let top = self.path("var/lib/dkms");
        for module in list(&top).into_iter().filter(|m| top.join(m).is_dir()) {
            let mdir = top.join(&module);
            for entry in list(&mdir) {
                let path = mdir.join(&entry);
                if let Some(rest) = entry.strip_prefix("kernel-") {
                    let kver = rest.strip_suffix("-x86_64").unwrap_or(rest).to_owned();
                    let target = fs::read_link(&path).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
                    let version = target.split('/').next().unwrap_or_default().to_owned();
                    tree.installed.insert((module.clone(), kver), version);
                } else if path.is_dir() {
                    tree.registered.insert((module.clone(), entry.clone()));
                    for kver in list(&path) {
                        let built = path.join(&kver).join("x86_64/module");
                        if kver != "source" && kver != "build" && !list(&built).is_empty() {
                            tree.built.insert((module.clone(), entry.clone(), kver));
                        }
                    }
                }
            }
        }
        tree
    }

    /// The whole modules state: exactly the EXPECTED modules are built and installed, each for
    /// exactly its kernels (an empty list: registered at most, built nowhere): module files under
    /// `usr/lib/modules/<kver>/updates/dkms/` with a vermagic naming `<kver>`, nothing else there,
    /// the dkms tree agreeing, and each kernel's modules.dep listing its modules.
    pub fn assert_modules(&self, expected: &[(Module, &[Kernel])]) {
        let mut files = BTreeSet::new();
        let mut installed = BTreeMap::new();
        let mut built = BTreeSet::new();
        let mut must_register = BTreeSet::new();
        let mut may_register = BTreeSet::new();
        for (m, kernels) in expected {
            may_register.insert((m.name.to_owned(), m.modver.to_owned()));
            if !kernels.is_empty() {
                must_register.insert((m.name.to_owned(), m.modver.to_owned()));
            }
            for k in *kernels {
                files.insert(format!("{}/updates/dkms/{}.ko", k.kver, m.ko));
                installed.insert((m.name.to_owned(), k.kver.to_owned()), m.modver.to_owned());
                built.insert((m.name.to_owned(), m.modver.to_owned(), k.kver.to_owned()));
            }
        }
        let actual = self.module_files();
        let wrong: Vec<_> = actual.iter().filter(|(f, v)| !f.starts_with(&format!("{v}/"))).collect();
        assert!(
            wrong.is_empty(),
            "modules built for another kernel than their directory's (file, vermagic): {wrong:?}"
        );
        let actual_files: BTreeSet<String> = actual.into_keys().collect();
        assert_eq!(actual_files, files, "module files under usr/lib/modules (actual, expected)");
        let tree = self.dkms_tree();
        assert_eq!(tree.installed, installed, "dkms tree: installed (module, kernel) -> version (actual, expected)");
        assert_eq!(tree.built, built, "dkms tree: built (module, version, kernel) (actual, expected)");
        assert!(
            must_register.is_subset(&tree.registered) && tree.registered.is_subset(&may_register),
            "dkms tree: registered module/versions {:?}, expected at least {must_register:?}, at most {may_register:?}",
            tree.registered
        );
        for (m, kernels) in expected {
            for k in *kernels {
                let dep = fs::read_to_string(self.path(&format!("usr/lib/modules/{}/modules.dep", k.kver)))
                    .unwrap_or_default();
                let entry = format!("updates/dkms/{}.ko:", m.ko);
                assert!(dep.lines().any(|l| l.starts_with(&entry)), "modules.dep of {} lacks {entry}:\n{dep}", k.kver);
            }
        }
    }

    /// What is left in `usr/lib/modules/<kver>` of a kernel that left: nothing, or only what depmod
    /// generates (`modules.*`; kmod's own hook deletes those on Arch, and it is not in this root).
    /// Returns the leftovers for the test's log; fails on anything of ours (`updates/`, `.ko` files).
    pub fn assert_kernel_dir_clean(&self, kver: &str) -> Vec<String> {
        let dir = self.path("usr/lib/modules").join(kver);
        let left = list(&dir);
        println!("left in usr/lib/modules/{kver}: {left:?}");
        let ours: Vec<_> = left.iter().filter(|f| !f.starts_with("modules.")).collect();
        assert!(ours.is_empty(), "usr/lib/modules/{kver} still has {ours:?} (all left: {left:?})");
        left
    }

    /// `modinfo -F FIELD` of a module file in the root.
    pub fn modinfo(&self, rel: &str, field: &str) -> String {
        modinfo(&self.path(rel), field)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        println!("scenario took {:.1}s", self.started.elapsed().as_secs_f64());
        let keep = std::env::var_os("DKMS_HOOK_REAL_KEEP").is_some();
        let ran = shell(if keep { "ovr_umount" } else { "ovr_destroy" }, &[self.dir.to_str().unwrap()]);
        if keep && ran.status.success() {
            eprintln!("kept {}/upper: every file the test wrote", self.dir.display());
        }
        if !ran.status.success() {
            let msg = format!("cannot tear down the overlay root {}: {}", self.dir.display(), ran.output);
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// The real pacman on ROOT (see `ovr_pacman_hookdir`) with HOOKDIR as its user hook directory.
pub fn pacman_hookdir(root: &Path, hookdir: &Path, args: &[&str]) -> Transaction {
    println!("\n$ pacman --root {} --hookdir {} {}", root.display(), hookdir.display(), args.join(" "));
    let started = Instant::now();
    let mut all = vec![root.to_str().unwrap(), hookdir.to_str().unwrap()];
    all.extend_from_slice(args);
    let ran = shell("ovr_pacman_hookdir", &all);
    println!("{}[pacman exit {:?}, {:.1}s]", ran.output, ran.status.code(), started.elapsed().as_secs_f64());
    Transaction { code: ran.status.code(), output: ran.output }
}

/// A machine's `/etc/pacman.d/hooks` as the dkms-hook package leaves it (its hook files there,
/// taken from the package file), in a fresh directory outside every root.
pub fn package_hookdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("dkms-hook-machine-hooks.").tempdir().unwrap();
    let pkg = Pkg::DkmsHook.file();
    let ran = shell("ovr_package_hooks", &[pkg.to_str().unwrap(), dir.path().to_str().unwrap()]);
    assert!(ran.status.success(), "cannot copy the package's hooks:\n{}", ran.output);
    println!("the package's /etc/pacman.d/hooks: {:?}", list(dir.path()));
    dir
}

/// A new root as pacstrap starts it: a plain empty directory (no overlay, nothing of this machine
/// in it) with pacman's directories only (`ovr_bare_root`). Deleted when dropped.
pub struct BareRoot {
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl BareRoot {
    /// A bare root, or `None` when the tier cannot run here.
    pub fn new() -> Option<BareRoot> {
        if !skip::can_run("the real-transaction tier", unavailable(Dkms::V3_0)) {
            return None;
        }
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::Builder::new().prefix("dkms-hook-bare.").tempdir().unwrap();
        let root = dir.path().join("root");
        let ran = shell("ovr_bare_root", &[root.to_str().unwrap()]);
        assert!(ran.status.success(), "cannot prepare the bare root:\n{}", ran.output);
        Some(BareRoot { root, _dir: dir, _serial: serial })
    }

    /// PATH inside the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The real pacman on this root, with HOOKDIR as its user hook directory.
    pub fn pacman_hookdir(&self, hookdir: &Path, args: &[&str]) -> Transaction {
        pacman_hookdir(&self.root, hookdir, args)
    }
}

/// Unmounts and deletes the roots of test processes that are gone (killed before their roots were
/// dropped).
fn remove_stale_roots() {
    let tmp = std::env::temp_dir();
    for name in list(&tmp) {
        let Some(rest) = name.strip_prefix("dkms-hook-real.") else {
            continue;
        };
        let pid = rest.split('.').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let ran = shell("ovr_destroy", &[tmp.join(&name).to_str().unwrap()]);
            if !ran.status.success() {
                eprintln!("cannot remove the stale root {name}: {}", ran.output);
            }
        }
    }
}

/// The dkms tree's state (`var/lib/dkms`).
#[derive(Debug, Default)]
pub struct DkmsTree {
    /// (module, version) directories.
    pub registered: BTreeSet<(String, String)>,
    /// (module, version, kernel) with a built module in `<kernel>/x86_64/module/`.
    pub built: BTreeSet<(String, String, String)>,
    /// (module, kernel) -> version, from the `kernel-<kver>-x86_64` symlinks.
    pub installed: BTreeMap<(String, String), String>,
}

/// The names in DIR, sorted; none if it does not exist.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn modinfo(path: &Path, field: &str) -> String {
    let mut cmd = Command::new("modinfo");
    let out = tool_env(cmd.args(["-F", field]).arg(path)).output().expect("cannot run modinfo");
    assert!(out.status.success(), "modinfo {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The kernel a module file's vermagic names.
fn vermagic(path: &Path) -> String {
    modinfo(path, "vermagic").split_whitespace().next().unwrap_or_default().to_owned()
}
