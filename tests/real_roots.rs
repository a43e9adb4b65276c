//! Transactions into another root, as `pacstrap` and `pacman --root R` make them on a machine that
//! has dkms-hook: pacman reads the machine's `/etc/pacman.d/hooks` (not relative to `--root`) and
//! runs those hooks chrooted into the other root, while the packages' hook directory
//! (`/usr/share/libalpm/hooks`) is the other root's own. The machine's hook directory here is a
//! directory outside every root holding the hook files the dkms-hook package installs there (taken
//! from the package file, so they are where and what the PKGBUILD makes them).
//!
//! Needs root and scripts/setup; skipped with a message otherwise, but fails in CI (`CI=true`).
//! `cargo test --test real_roots -- --nocapture` shows every transaction's output.

#[macro_use]
mod real;

use real::*;

/// Both kernels of most scenarios.
const BOTH: &[Kernel] = &[LINUX, LINUX_CLOUD];
/// What the dkms-hook package depends on, besides dkms: file-less stand-ins here.
const DEPENDS: &[&str] = &["bash", "gcc-libs", "glibc", "kmod", "pacman"];
/// The line of the install hook in a root without dkms-hook.
const NOT_HERE: &str = "dkms-hook is not installed in this root";

for_each_dkms! {
    root_with_dkms_but_not_dkms_hook => r02_root_with_dkms_but_not_dkms_hook_dkms_3_0,
        r02_root_with_dkms_but_not_dkms_hook_dkms_3_2;
    root_with_dkms_hook => r03_root_with_dkms_hook_dkms_3_0, r03_root_with_dkms_hook_dkms_3_2;
    remove_without_modules => r04_remove_without_modules_dkms_3_0, r04_remove_without_modules_dkms_3_2;
}

/// The lines of pacman's output that come from dkms-hook's hooks or name DKMS.
fn dkms_lines(t: &Transaction) -> Vec<&str> {
    t.output
        .lines()
        .filter(|l| {
            let lower = l.to_lowercase();
            lower.contains("dkms")
                || [
                    "Install DKMS modules",
                    "Prepare DKMS modules for their upgrade",
                    "Remove DKMS modules",
                    "Test-build DKMS modules",
                ]
                .iter()
                .any(|d| l.contains(d))
        })
        .collect()
}

/// `pacstrap NEWROOT base linux linux-headers` on a machine with dkms-hook: the new root is an
/// empty directory, it gets no dkms and no dkms-hook. The transaction succeeds, no hook fails or is
/// refused, and the only line of ours is the install hook's one line saying dkms-hook is not
/// installed there. (dkms does not matter: the new root has none.)
#[test]
fn r01_pacstrap_into_an_empty_root() {
    let Some(bare) = BareRoot::new() else { return };
    let hooks = package_hookdir();
    let mut files = vec![Pkg::Base.file()];
    files.extend([LINUX.pkg().file(), LINUX.headers().file()]);
    let mut args = vec!["-U"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let t = bare.pacman_hookdir(hooks.path(), &args);
    assert_eq!(t.code, Some(0), "pacman --root EMPTY -U base linux linux-headers failed:\n{}", t.output);
    t.assert_hooks_ok().assert_hook_files_accepted();
    t.assert_lacks("could not satisfy dependencies").assert_lacks("call to execv failed");
    let ours = dkms_lines(&t);
    let said: Vec<&&str> = ours.iter().filter(|l| l.contains(NOT_HERE)).collect();
    assert_eq!(said.len(), 1, "not exactly one {NOT_HERE:?} line:\n{}", t.output);
    assert!(
        ours.iter().all(|l| l.contains(NOT_HERE) || l.contains("Install DKMS modules")),
        "other lines of ours: {ours:?}\n{}",
        t.output
    );
    assert!(bare.path(&format!("usr/lib/modules/{}/vmlinuz", LINUX.kver)).is_file(), "the kernel is not installed");
    assert!(!bare.path("var/lib/dkms").exists(), "something made a dkms tree in the new root");
}

/// A root with dkms but without dkms-hook (`pacman --root R` from a machine that has dkms-hook):
/// installing kernels and a module succeeds with no hook failure and one line of ours; nothing is
/// built there (the stock hooks are not in this root, ours do nothing).
fn root_with_dkms_but_not_dkms_hook(dkms: Dkms) {
    let Some(root) = Root::new_without_hooks(dkms) else { return };
    let hooks = package_hookdir();
    for pkgs in [vec![LINUX.pkg(), LINUX.headers()], vec![HELLO_1_0.pkg()]] {
        let files: Vec<String> = pkgs.iter().map(|p| p.file().to_str().unwrap().to_owned()).collect();
        let mut args = vec!["-U"];
        args.extend(files.iter().map(String::as_str));
        let t = root.pacman_hookdir(hooks.path(), &args);
        assert_eq!(t.code, Some(0), "pacman -U failed:\n{}", t.output);
        t.assert_hooks_ok().assert_hook_files_accepted();
        t.assert_lacks("could not satisfy dependencies").assert_lacks("call to execv failed");
        let said = dkms_lines(&t).iter().filter(|l| l.contains(NOT_HERE)).count();
        assert_eq!(said, 1, "not exactly one {NOT_HERE:?} line:\n{}", t.output);
    }
    root.assert_modules(&[]);
}

/// A root that has dkms and dkms-hook, reached from a machine whose `/etc/pacman.d/hooks` has
/// dkms-hook's hooks: the machine's hooks and the root's guard work inside the root. Installing a
/// module there builds it for both kernels (checked with modinfo and `dkms status` in the root), and
/// the kernels boot and load it.
fn root_with_dkms_hook(dkms: Dkms) {
    let Some(root) = Root::new_without_hooks(dkms) else { return };
    let hooks = package_hookdir();
    let stubs: Vec<Pkg> = DEPENDS.iter().map(|d| Pkg::Stub(d, "1-1")).collect();
    root.install(&stubs);
    root.install(&[Pkg::DkmsHook]);
    let kernels: Vec<String> =
        BOTH.iter().flat_map(|k| [k.pkg(), k.headers()]).map(|p| p.file().to_str().unwrap().to_owned()).collect();
    let mut args = vec!["-U"];
    args.extend(kernels.iter().map(String::as_str));
    let t = root.pacman_hookdir(hooks.path(), &args);
    assert_eq!(t.code, Some(0), "pacman -U kernels failed:\n{}", t.output);
    t.assert_hooks_ok().assert_hook_files_accepted().assert_lacks(NOT_HERE);

    let hello = HELLO_1_0.pkg().file();
    let t = root.pacman_hookdir(hooks.path(), &["-U", hello.to_str().unwrap()]);
    assert_eq!(t.code, Some(0), "pacman -U hello-dkms failed:\n{}", t.output);
    t.assert_hooks_ok().assert_hook_files_accepted().assert_lacks(NOT_HERE);
    t.assert_contains("Test-build DKMS modules").assert_contains("Install DKMS modules");
    for k in BOTH {
        t.assert_line(&["hello/1.0", k.kver]);
    }
    root.assert_modules(&[(HELLO_1_0, BOTH)]);
    let status = root.chroot(&["dkms", "status"]);
    for k in BOTH {
        let ko = format!("usr/lib/modules/{}/updates/dkms/hello.ko", k.kver);
        assert_eq!(root.modinfo(&ko, "version"), "1.0");
        assert!(
            status.output.lines().any(|l| l.starts_with("hello") && l.contains(k.kver) && l.contains("installed")),
            "dkms status in the root does not show hello installed for {}:\n{}",
            k.kver,
            status.output
        );
    }
    let boots = root.assert_modules_load();
    for boot in &boots {
        assert!(boot.loaded("hello"), "{}", boot.summary());
    }
}

/// `pacman -R` of a package that ships no DKMS sources and no kernel files, in a root with
/// dkms-hook and a module installed: no line of ours at all.
fn remove_without_modules(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(&[LINUX]);
    root.install(&[HELLO_1_0.pkg()]).assert_hooks_ok();
    root.install(&[Pkg::Stub("firefox", "1-1")]);
    let t = root.remove(&["firefox"]);
    t.assert_hooks_ok();
    assert_eq!(dkms_lines(&t), Vec::<&str>::new(), "pacman -R firefox printed lines of ours:\n{}", t.output);
    root.assert_modules(&[(HELLO_1_0, &[LINUX])]);
}

/// A root with dkms-hook but without dkms (`pacman -Rdd dkms`): installing kernels and a module
/// (`-Udd`) succeeds with no hook failure; the install hook says in one line that there is nothing to do,
/// the guard stays silent, nothing is built. (dkms does not matter: the root has none.)
#[test]
fn r05_root_with_dkms_hook_but_not_dkms() {
    let Some(root) = Root::new(Dkms::V3_0) else { return };
    root.pacman(&["-Rdd", "dkms"]);
    let ran = root.chroot(&["rm", "/usr/sbin/dkms"]);
    assert!(ran.status.success(), "{}", ran.output);
    assert!(!root.chroot(&["sh", "-c", "command -v dkms"]).status.success(), "the root still has a dkms");

    // hello-dkms depends on dkms: -dd, as whoever removed dkms did.
    let files: Vec<String> =
        [LINUX.pkg(), LINUX.headers(), HELLO_1_0.pkg()].iter().map(|p| p.file().to_str().unwrap().to_owned()).collect();
    let mut args = vec!["-Udd"];
    args.extend(files.iter().map(String::as_str));
    let t = root.pacman(&args);
    assert_eq!(t.code, Some(0), "pacman -Udd failed:\n{}", t.output);
    t.assert_hooks_ok().assert_hook_files_accepted().assert_lacks(NOT_HERE);
    let said: Vec<&str> = t.output.lines().filter(|l| l.contains("dkms is not installed")).collect();
    assert_eq!(said.len(), 1, "not exactly one line saying dkms is not installed:\n{}", t.output);
    assert!(said[0].ends_with("nothing to do"), "{}", said[0]);
    t.assert_lacks("error").assert_lacks("warning");
    root.assert_modules(&[]);
}

/// `pacstrap NEWROOT base linux linux-headers dkms hello-dkms` on a machine with dkms-hook: the
/// first transaction into an empty directory brings a module too. No PreTransaction hook of ours
/// may fire then, before any package, even `/bin/sh`, is in the new root: the ones in the
/// machine's hook directory match only what leaves or is upgraded, and the guard, which matches
/// what comes, lives in the root's own hook directory. The transaction succeeds with no hook
/// failure and one line of ours.
#[test]
fn r06_pacstrap_with_a_module_into_an_empty_root() {
    let Some(bare) = BareRoot::new() else { return };
    let hooks = package_hookdir();
    let pkgs = [Pkg::Base, Pkg::DkmsStub(Dkms::V3_0), LINUX.pkg(), LINUX.headers(), HELLO_1_0.pkg()];
    let files: Vec<String> = pkgs.iter().map(|p| p.file().to_str().unwrap().to_owned()).collect();
    let mut args = vec!["-U"];
    args.extend(files.iter().map(String::as_str));
    let t = bare.pacman_hookdir(hooks.path(), &args);
    assert_eq!(
        t.code,
        Some(0),
        "pacman --root EMPTY -U base dkms linux linux-headers hello-dkms failed:\n{}",
        t.output
    );
    t.assert_hooks_ok().assert_hook_files_accepted();
    t.assert_lacks("could not satisfy dependencies").assert_lacks("call to execv failed");
    let said = dkms_lines(&t).iter().filter(|l| l.contains(NOT_HERE)).count();
    assert_eq!(said, 1, "not exactly one {NOT_HERE:?} line:\n{}", t.output);
}
