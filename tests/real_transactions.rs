//! Which transaction the guard's builds belong to, in real libalpm transactions on throwaway
//! overlay roots (see `tests/real/mod.rs`), each scenario with dkms 3.0.10 and 3.2.2 and ending
//! with the boot check:
//!
//! - two transactions under one long-lived front end (pamac-daemon, packagekitd): this test
//!   process is that front end — it opens the root with libalpm and commits transactions itself
//!   (`Frontend`), so every hook is its child, as under a daemon. The first transaction is aborted
//!   by a later PreTransaction hook after the guard made its builds; the second, with the guard
//!   off, must build for itself and never install the first one's builds.
//! - a transaction that brings a (stand-in) gcc with a new kernel: the guard says it cannot judge,
//!   a critical module that fails stops nothing, and the install hook builds everything again;
//!   and where the guard cannot see the gcc package, the install hook refuses the guard's builds
//!   because the toolchain they were made with is not the one installed after the transaction.
//!
//! Needs root and scripts/setup; skipped with a message otherwise, but fails in CI (`CI=true`).
//! `cargo test --test real_transactions -- --nocapture` shows every transaction's output.

#[macro_use]
mod real;

use std::cell::RefCell;
use std::fs;
use std::rc::Rc;

use alpm::{Alpm, LogLevel, SigLevel, TransFlag};
use real::*;

for_each_dkms! {
    second_transaction_of_a_front_end => t1_second_transaction_of_a_front_end_dkms_3_0,
        t1_second_transaction_of_a_front_end_dkms_3_2;
    new_compiler_with_a_new_kernel => t2_new_compiler_with_a_new_kernel_dkms_3_0,
        t2_new_compiler_with_a_new_kernel_dkms_3_2;
    compiler_the_guard_cannot_see => t3_compiler_the_guard_cannot_see_dkms_3_0,
        t3_compiler_the_guard_cannot_see_dkms_3_2;
}

/// What the install hook says of a build the guard made.
const HANDED_OVER: &str = "installed (built before the transaction)";

/// A long-lived libalpm front end on a root, in this process: what pacman's `-U` does, through the
/// same library calls (`alpm_trans_init` … `alpm_trans_release`), with the root's hooks, cache and
/// log as `ovr_pacman` sets them.
struct Frontend {
    handle: Alpm,
    output: Rc<RefCell<String>>,
}

impl Frontend {
    fn open(root: &Root) -> Frontend {
        let path = |rel: &str| root.path(rel).to_str().unwrap().to_owned();
        let mut handle = Alpm::new(path(""), path("var/lib/pacman")).expect("libalpm cannot open the root");
        handle.add_hookdir(path("etc/pacman.d/hooks")).unwrap();
        handle.add_cachedir(path("var/cache/pacman/pkg")).unwrap();
        handle.set_logfile(path("var/log/pacman.log")).unwrap();
        handle.set_gpgdir(path("etc/pacman.d/gnupg")).unwrap();
        handle.set_default_siglevel(SigLevel::NONE).unwrap();
        handle.set_local_file_siglevel(SigLevel::NONE).unwrap();
        let output = Rc::new(RefCell::new(String::new()));
        handle.set_log_cb(output.clone(), |level: LogLevel, msg: &str, out: &mut Rc<RefCell<String>>| {
            if level.intersects(LogLevel::ERROR | LogLevel::WARNING) {
                out.borrow_mut().push_str(&format!("{level:?}: {msg}"));
            }
        });
        Frontend { handle, output }
    }

    /// One transaction installing or upgrading to PKGS, from the root's package cache (where a
    /// front end that syncs has them downloaded, and where dkms-hook finds them through the sync
    /// database): its outcome and everything it printed.
    fn upgrade(&mut self, root: &Root, pkgs: &[Pkg]) -> Transaction {
        self.output.borrow_mut().clear();
        let files: Vec<String> = pkgs.iter().map(|p| cached(root, *p)).collect();
        println!("\n$ (front end {}) upgrade {}", std::process::id(), files.join(" "));
        let logged = fs::metadata(root.path("var/log/pacman.log")).map_or(0, |m| m.len() as usize);
        self.handle.trans_init(TransFlag::NONE).expect("alpm_trans_init");
        let mut outcome = Ok(());
        for file in &files {
            let pkg = self.handle.pkg_load(file.as_str(), true, SigLevel::NONE).expect("alpm_pkg_load");
            self.handle.trans_add_pkg(pkg).map_err(|e| e.to_string()).expect("alpm_add_pkg");
        }
        let prepared = self.handle.trans_prepare().map_err(|e| format!("failed to prepare the transaction ({e})"));
        if let Err(e) = prepared {
            outcome = Err(e);
        } else if let Err(e) = self.handle.trans_commit() {
            outcome = Err(format!("failed to commit transaction ({e})"));
        }
        self.handle.trans_release().expect("alpm_trans_release");
        // What the hooks printed, from pacman's log (libalpm logs every line of it there; the
        // alpm crate's event callback cannot be used: it reads libalpm's smaller events as the
        // whole event union, which debug builds refuse as misaligned).
        let log = fs::read_to_string(root.path("var/log/pacman.log")).unwrap_or_default();
        let mut output: String = log[logged.min(log.len())..]
            .lines()
            .filter_map(|l| l.split_once("] [ALPM-SCRIPTLET] ").or_else(|| l.split_once("] [ALPM] running ")))
            .map(|(_, text)| format!("{text}\n"))
            .collect();
        output.push_str(&self.output.borrow());
        if let Err(e) = &outcome {
            output.push_str(&format!("error: {e}\n"));
        }
        println!("{output}[{}]", if outcome.is_ok() { "committed" } else { "failed" });
        Transaction { code: Some(if outcome.is_ok() { 0 } else { 1 }), output }
    }
}

/// PKG in the root's package cache (and in the sync database `served`, refreshed): its path.
fn cached(root: &Root, pkg: Pkg) -> String {
    let file = pkg.file();
    let cached = root.path("var/cache/pacman/pkg").join(file.file_name().unwrap());
    if !cached.exists() {
        root.serve(&[pkg]);
        // -Syy: the database may have been served and read within the same second, which -Sy
        // takes for "up to date".
        assert_eq!(root.pacman(&["-Syy"]).code, Some(0), "pacman -Syy failed");
        fs::copy(&file, &cached).expect("cannot copy a package into the root's cache");
    }
    cached.to_str().unwrap().to_owned()
}

fn configure(root: &Root, text: &str) {
    fs::write(root.path("etc/dkms-hook.toml"), text).unwrap();
}

/// A PreTransaction hook after the guard that fails for every incoming kernel and aborts the
/// transaction, as any later hook with `AbortOnFail` can.
const ABORTING_HOOK: &str = "etc/pacman.d/hooks/50-test-abort.hook";

fn add_aborting_hook(root: &Root) {
    fs::write(
        root.path(ABORTING_HOOK),
        "[Trigger]\nOperation = Install\nOperation = Upgrade\nType = Path\nTarget = usr/lib/modules/*/vmlinuz\n\n\
         [Action]\nDescription = A later hook that fails\nWhen = PreTransaction\n\
         Exec = /bin/sh -c 'echo \"later hook: failing\"; exit 1'\nAbortOnFail\n",
    )
    .unwrap();
}

/// (f) Two transactions under one long-lived front end. The first (a kernel upgrade) is aborted by a
/// later hook after the guard built hello for the new kernel; the second, the same upgrade with the
/// guard off (`guard = false`), installs hello for the new kernel from a build of its own.
fn second_transaction_of_a_front_end(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(&[LINUX]);
    root.install(&[HELLO_1_0.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, &[LINUX])]);
    let mut frontend = Frontend::open(&root);
    let upgrade = [LINUX_NEXT.pkg(), LINUX_NEXT.headers()];

    add_aborting_hook(&root);
    let t = frontend.upgrade(&root, &upgrade);
    assert_ne!(t.code, Some(0), "the first transaction was not aborted:\n{}", t.output);
    t.assert_line(&["hello/1.0 for", LINUX_NEXT.kver, "builds"]);
    t.assert_contains("later hook: failing");
    assert_eq!(root.version_of("linux").as_deref(), Some(LINUX.version));
    assert!(root.path("var/lib/dkms-hook/prebuilt/index.json").exists(), "the guard handed nothing over");

    fs::remove_file(root.path(ABORTING_HOOK)).unwrap();
    configure(&root, "guard = false\n");
    root.record_make();
    let t = frontend.upgrade(&root, &upgrade);
    assert_eq!(t.code, Some(0), "the second transaction failed:\n{}", t.output);
    t.assert_hooks_ok();
    t.assert_contains("DKMS guard off (guard = false in the configuration)");
    t.assert_lacks(HANDED_OVER);
    t.assert_line(&["hello/1.0 for", LINUX_NEXT.kver, "installed in"]);
    let builds: Vec<String> = root.make_calls().into_iter().filter(|m| m.ends_with(" modules")).collect();
    assert_eq!(builds.len(), 1, "one build of hello, by the install hook: {builds:#?}");
    assert!(!builds[0].contains("/var/lib/dkms-hook/prebuilt/"), "{builds:#?}");
    drop(frontend);
    assert_eq!(root.version_of("linux").as_deref(), Some(LINUX_NEXT.version));
    root.assert_modules(&[(HELLO_1_0, &[LINUX_NEXT])]);
    let ko = format!("usr/lib/modules/{}/updates/dkms/hello.ko", LINUX_NEXT.kver);
    assert_eq!(root.modinfo(&ko, "version"), "1.0");
    assert!(!root.path("var/lib/dkms-hook/prebuilt").exists(), "the first transaction's builds are still there");
    let boots = root.assert_modules_load();
    assert_eq!(boots.len(), 1);
    assert!(boots[0].loaded("hello"), "{}", boots[0].summary());
}

/// The installed gcc: a file-less stand-in (the compiler is the host's).
const GCC_OLD: Pkg = Pkg::Stub("gcc", "14.1.1-1");
/// Its upgrade: a package named gcc with a newer version, holding only a README.
const GCC_NEW: Pkg = Pkg::Tree("gcc", "14.2.1-1", "standins/gcc");

/// (g) `pacman -Syu` brings a new gcc with a new kernel, and `rtfail` (critical) does not build for
/// that kernel: the guard says once that it cannot judge with the old compiler, the transaction
/// goes on, and the install hook builds every module itself — nothing the guard built is installed.
fn new_compiler_with_a_new_kernel(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(&[LINUX]);
    root.install(&[GCC_OLD, HELLO_1_0.pkg(), RTFAIL.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, &[LINUX]), (RTFAIL, &[LINUX])]);
    configure(&root, "critical = [\"rtfail\"]\n");
    root.serve(&[LINUX_NEXT.pkg(), LINUX_NEXT.headers(), GCC_NEW]);
    root.record_make();

    let t = root.pacman(&["-Syu"]);
    assert_eq!(t.code, Some(0), "pacman -Syu was stopped:\n{}", t.output);
    let warning = t.assert_line(&["warning: the transaction also changes the toolchain (gcc 14.1.1-1 → 14.2.1-1)"]);
    assert_eq!(t.output.matches("changes the toolchain").count(), 1, "{}", t.output);
    let first_change = t.line_of(&["upgrading "]).expect("pacman upgraded nothing");
    assert!(warning < first_change, "the warning came after pacman changed packages:\n{}", t.output);
    t.assert_line(&["warning: rtfail/1.0 for", LINUX_NEXT.kver, "does not build with the old toolchain"]);
    t.assert_lacks("is critical and does not build");
    t.assert_line(&["DKMS guard:", "the install hook builds again"]);
    t.assert_lacks(HANDED_OVER);
    t.assert_line(&["hello/1.0 for", LINUX_NEXT.kver, "installed in"]);
    t.assert_line(&["rtfail/1.0 for", LINUX_NEXT.kver, "failed"]);
    assert_eq!(root.version_of("gcc").as_deref(), Some("14.2.1-1"));
    assert_eq!(root.version_of("linux").as_deref(), Some(LINUX_NEXT.version));
    // The guard built hello and rtfail in its own trees; the install hook built both again.
    let builds: Vec<String> = root.make_calls().into_iter().filter(|m| m.ends_with(" modules")).collect();
    let (guard, install): (Vec<&String>, Vec<&String>) =
        builds.iter().partition(|m| m.contains(" M=/var/lib/dkms-hook/prebuilt/"));
    assert_eq!((guard.len(), install.len()), (2, 2), "module builds: {builds:#?}");
    root.assert_modules(&[(HELLO_1_0, &[LINUX_NEXT]), (RTFAIL, &[])]);
    let ko = format!("usr/lib/modules/{}/updates/dkms/hello.ko", LINUX_NEXT.kver);
    assert_eq!(root.modinfo(&ko, "version"), "1.0");
    assert!(!root.path("var/lib/dkms-hook/prebuilt").exists(), "the guard's builds outlived the transaction");
    let boots = root.assert_modules_load();
    assert_eq!(boots.len(), 1);
    assert!(boots[0].loaded("hello"), "{}", boots[0].summary());
}

/// (h) `pacman -U` of the new kernel (from the root's cache) and of a new gcc from a file outside
/// the root, which the guard, chrooted into the root, cannot read: it builds hello with the old gcc
/// and hands the build over, recording that gcc. After the transaction the install hook finds
/// another gcc installed, says so in one line, and builds again.
fn compiler_the_guard_cannot_see(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(&[LINUX]);
    root.install(&[GCC_OLD, HELLO_1_0.pkg()]).assert_hooks_ok();
    let cache = root.path("var/cache/pacman/pkg");
    let mut files: Vec<String> = [LINUX_NEXT.pkg(), LINUX_NEXT.headers()]
        .iter()
        .map(|p| {
            let cached = cache.join(p.file().file_name().unwrap());
            fs::copy(p.file(), &cached).unwrap();
            cached.to_str().unwrap().to_owned()
        })
        .collect();
    files.push(GCC_NEW.file().to_str().unwrap().to_owned());
    root.record_make();

    let mut args = vec!["-U"];
    args.extend(files.iter().map(String::as_str));
    let t = root.pacman(&args);
    assert_eq!(t.code, Some(0), "pacman -U failed:\n{}", t.output);
    t.assert_lacks("changes the toolchain");
    t.assert_line(&["DKMS guard: 1 of 1 test build works; the install hook installs these builds"]);
    t.assert_line(&["built again: the toolchain changed in the transaction (gcc 14.1.1-1 → 14.2.1-1)"]);
    assert_eq!(t.output.matches("toolchain changed").count(), 1, "{}", t.output);
    t.assert_lacks(HANDED_OVER);
    t.assert_line(&["hello/1.0 for", LINUX_NEXT.kver, "installed in"]);
    let builds: Vec<String> = root.make_calls().into_iter().filter(|m| m.ends_with(" modules")).collect();
    let (guard, install): (Vec<&String>, Vec<&String>) =
        builds.iter().partition(|m| m.contains(" M=/var/lib/dkms-hook/prebuilt/"));
    assert_eq!((guard.len(), install.len()), (1, 1), "module builds: {builds:#?}");
    assert_eq!(root.version_of("gcc").as_deref(), Some("14.2.1-1"));
    root.assert_modules(&[(HELLO_1_0, &[LINUX_NEXT])]);
    let ko = format!("usr/lib/modules/{}/updates/dkms/hello.ko", LINUX_NEXT.kver);
    assert_eq!(root.modinfo(&ko, "version"), "1.0");
    assert!(!root.path("var/lib/dkms-hook/prebuilt").exists());
    let boots = root.assert_modules_load();
    assert_eq!(boots.len(), 1);
    assert!(boots[0].loaded("hello"), "{}", boots[0].summary());
}
