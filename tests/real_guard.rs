//! The pre-transaction guard in real pacman 7.1 transactions: `pacman -Syu` from a local repository
//! (`repo-add`, a `file://` server) with all four hooks, the real dkms and real kernel headers, in
//! throwaway overlay roots (see `tests/real/mod.rs`). The kernel upgrade goes from `linux` at the
//! amd64 kver to the rt kver, for which the `rtfail` module does not compile; `libmod` builds
//! against `/lib/modules/K/build`, which the guard provides in a private mount namespace before
//! the new kernel is installed. Each scenario runs with dkms 3.0.10 and 3.2.2, and ends by booting the
//! kernel it leaves modules for and loading them (the boot check, `tests/real/boot.rs`): the builds
//! made before the transaction load in the kernel the transaction installed.
//!
//! Needs root and scripts/setup; skipped with a message otherwise, but fails in CI (`CI=true`).
//! `cargo test --test real_guard -- --nocapture` shows every transaction's output.

#[macro_use]
mod real;

use std::fs;

use real::*;

for_each_dkms! {
    critical_module_stops_a_kernel_upgrade => g1_critical_module_stops_a_kernel_upgrade_dkms_3_0,
        g1_critical_module_stops_a_kernel_upgrade_dkms_3_2;
    other_module_warns_and_the_upgrade_goes_on => g2_other_module_warns_and_the_upgrade_goes_on_dkms_3_0,
        g2_other_module_warns_and_the_upgrade_goes_on_dkms_3_2;
    nothing_is_built_twice => g3_nothing_is_built_twice_dkms_3_0, g3_nothing_is_built_twice_dkms_3_2;
    critical_module_upgrade_that_fails => g4_critical_module_upgrade_that_fails_dkms_3_0,
        g4_critical_module_upgrade_that_fails_dkms_3_2;
    first_module_before_dkms_has_a_key => g5_first_module_before_dkms_has_a_key_dkms_3_0,
        g5_first_module_before_dkms_has_a_key_dkms_3_2;
    kernel_without_headers => g6_kernel_without_headers_dkms_3_0, g6_kernel_without_headers_dkms_3_2;
    headers_without_kernel => g7_headers_without_kernel_dkms_3_0, g7_headers_without_kernel_dkms_3_2;
}

/// What pacman prints when a hook stops the transaction.
const ABORTED: &str = "failed to run transaction hooks";

/// What an aborted transaction must leave exactly as it was.
const KEPT: &[&str] = &["usr/lib/modules", "usr/src", "var/lib/dkms", "var/lib/pacman/local"];

fn configure(root: &Root, text: &str) {
    fs::write(root.path("etc/dkms-hook.toml"), text).unwrap();
}

/// `linux` with headers, and the given modules installed for it.
fn system_with(dkms: Dkms, modules: &[Module]) -> Option<Root> {
    let root = Root::new(dkms)?;
    root.install_kernels(&[LINUX]);
    let pkgs: Vec<Pkg> = modules.iter().map(|m| m.pkg()).collect();
    root.install(&pkgs).assert_hooks_ok();
    let expected: Vec<(Module, &[Kernel])> = modules.iter().map(|m| (*m, &[LINUX][..])).collect();
    root.assert_modules(&expected);
    Some(root)
}

/// The line of the first package pacman changes.
fn first_change(t: &Transaction) -> usize {
    t.output
        .lines()
        .position(|l| l.contains("upgrading ") || l.contains("installing ") || l.contains("removing "))
        .unwrap_or_else(|| panic!("pacman changed no package:\n{}", t.output))
}

/// The boot check booted only KERNEL, and it loaded each of KOS.
fn assert_loaded(root: &Root, kernel: Kernel, kos: &[&str]) {
    let boots = root.assert_modules_load();
    let booted: Vec<&str> = boots.iter().map(|b| b.kernel()).collect();
    assert_eq!(booted, [kernel.kver], "the kernels with modules to load");
    for ko in kos {
        assert!(boots[0].loaded(ko), "{ko} is not loaded:\n{}", boots[0].summary());
    }
}

/// Nothing of the rt kernel: no module directory, no dkms build, no guard build left.
fn nothing_of_the_new_kernel(root: &Root) {
    assert!(!root.path("usr/lib/modules").join(LINUX_NEXT.kver).exists(), "the new kernel's directory exists");
    let tree = root.dkms_tree();
    assert!(tree.built.iter().all(|(_, _, k)| k != LINUX_NEXT.kver), "built for the new kernel: {:?}", tree.built);
    assert!(!root.path("var/lib/dkms-hook/prebuilt").exists(), "the guard's builds are still there");
}

/// (a) A critical module that does not compile for the incoming kernel: pacman aborts before any
/// package is touched, with the module, the kernel, the compiler's error and the ways forward; the
/// old kernel and its modules are exactly as they were. Then (e) the bypass variable lets the same
/// upgrade through.
fn critical_module_stops_a_kernel_upgrade(dkms: Dkms) {
    let Some(root) = system_with(dkms, &[HELLO_1_0, RTFAIL]) else { return };
    configure(&root, "critical = [\"rtfail\"]\n");
    root.serve(&[LINUX_NEXT.pkg(), LINUX_NEXT.headers()]);
    let before = root.snapshot(KEPT);

    let t = root.pacman(&["-Syu"]);
    assert_ne!(t.code, Some(0), "pacman did not abort:\n{}", t.output);
    t.assert_contains(ABORTED);
    t.assert_line(&["error: rtfail/1.0 is critical and does not build for kernel", LINUX_NEXT.kver]);
    t.assert_line(&["rtfail.c", "error:", "PREEMPT_RT"]);
    t.assert_line(&["pacman -Syu --ignore linux,linux-headers"]);
    t.assert_line(&["DKMS_HOOK_GUARD=off pacman -Syu"]);
    t.assert_line(&["hello/1.0 for", LINUX_NEXT.kver, "builds"]);
    assert_eq!(root.version_of("linux").as_deref(), Some(LINUX.version));
    assert_eq!(root.snapshot(KEPT), before, "the aborted transaction changed the system");
    root.assert_modules(&[(HELLO_1_0, &[LINUX]), (RTFAIL, &[LINUX])]);
    nothing_of_the_new_kernel(&root);

    let t = root.pacman_env(&[("DKMS_HOOK_GUARD", "off")], &["-Syu"]);
    assert_eq!(t.code, Some(0), "pacman -Syu failed:\n{}", t.output);
    t.assert_contains("DKMS guard off (DKMS_HOOK_GUARD=off)");
    // The install hook reports what the guard would have stopped.
    t.assert_line(&["rtfail/1.0 for", LINUX_NEXT.kver, "failed"]);
    assert_eq!(root.version_of("linux").as_deref(), Some(LINUX_NEXT.version));
    root.assert_modules(&[(HELLO_1_0, &[LINUX_NEXT]), (RTFAIL, &[])]);
    assert_loaded(&root, LINUX_NEXT, &["hello"]);
}

/// (b) The same module not critical: one warning before pacman changes anything, the upgrade goes
/// through, and every other module is installed for the new kernel (from the guard's builds).
fn other_module_warns_and_the_upgrade_goes_on(dkms: Dkms) {
    let Some(root) = system_with(dkms, &[HELLO_1_0, RTFAIL, LIBMOD]) else { return };
    root.serve(&[LINUX_NEXT.pkg(), LINUX_NEXT.headers()]);

    let t = root.pacman(&["-Syu"]);
    assert_eq!(t.code, Some(0), "pacman -Syu failed:\n{}", t.output);
    let warning = t.assert_line(&["warning: rtfail/1.0 for", LINUX_NEXT.kver, "does not build", "not critical"]);
    assert!(warning < first_change(&t), "the warning came after pacman changed packages:\n{}", t.output);
    for m in ["hello/1.0", "libmod/1.0"] {
        t.assert_line(&[m, "for", LINUX_NEXT.kver, "installed (built before the transaction)"]);
    }
    assert_eq!(root.version_of("linux").as_deref(), Some(LINUX_NEXT.version));
    root.assert_modules(&[(HELLO_1_0, &[LINUX_NEXT]), (LIBMOD, &[LINUX_NEXT]), (RTFAIL, &[])]);
    root.assert_kernel_dir_clean(LINUX.kver);
    assert_loaded(&root, LINUX_NEXT, &["hello", "libmod"]);
}

/// (c) An upgrade where everything builds: a new kernel and a new module version at once. The guard
/// builds every pair; after the transaction no make runs again, and every module is installed
/// (for `libmod`, built against headers that were only in the incoming package).
fn nothing_is_built_twice(dkms: Dkms) {
    let Some(root) = system_with(dkms, &[HELLO_1_0, LIBMOD, XPAD]) else { return };
    root.serve(&[LINUX_NEXT.pkg(), LINUX_NEXT.headers(), HELLO_1_1.pkg()]);
    root.record_make();

    let t = root.pacman(&["-Syu"]);
    assert_eq!(t.code, Some(0), "pacman -Syu failed:\n{}", t.output);
    t.assert_hooks_ok();
    t.assert_line(&["Test-building DKMS modules before the transaction: 3 builds"]);
    for m in ["hello/1.1", "libmod/1.0", XPAD_ID] {
        t.assert_line(&[m, "for", LINUX_NEXT.kver, "installed (built before the transaction)"]);
    }
    // dkms also asks make which compiler the kernel wants (`-f - show-CC`): not a build.
    let builds: Vec<String> = root.make_calls().into_iter().filter(|m| m.ends_with(" modules")).collect();
    assert_eq!(builds.len(), 3, "one module build per pair: {builds:#?}");
    let elsewhere: Vec<&String> = builds.iter().filter(|m| !m.contains(" M=/var/lib/dkms-hook/prebuilt/")).collect();
    assert!(elsewhere.is_empty(), "make built outside the guard's builds: {elsewhere:#?}\n{}", t.output);
    root.assert_modules(&[(HELLO_1_1, &[LINUX_NEXT]), (LIBMOD, &[LINUX_NEXT]), (XPAD, &[LINUX_NEXT])]);
    assert!(!root.path("var/lib/dkms-hook/prebuilt").exists(), "the guard's builds outlived the transaction");
    assert!(!root.path("var/lib/dkms/hello/1.0").exists(), "hello/1.0 is still in the dkms tree");
    assert_loaded(&root, LINUX_NEXT, &["hello", "libmod", "xpadneox"]);
}

/// xpad's dkms name.
const XPAD_ID: &str = "xpad-neo-x/0.9-r12-g3a1b";

/// (d) A critical module's own upgrade to a version that does not compile: aborted, the old version
/// intact. Then (e) `guard = false` lets it through, and the build-first swap keeps 1.0 installed.
fn critical_module_upgrade_that_fails(dkms: Dkms) {
    let Some(root) = system_with(dkms, &[HELLO_1_0]) else { return };
    configure(&root, "critical = [\"hel*\"]\n");
    root.serve(&[HELLO_1_1_BROKEN.pkg()]);
    let before = root.snapshot(KEPT);

    let t = root.pacman(&["-Syu"]);
    assert_ne!(t.code, Some(0), "pacman did not abort:\n{}", t.output);
    t.assert_contains(ABORTED);
    t.assert_line(&["error: hello/1.1 is critical and does not build for kernel", LINUX.kver]);
    t.assert_line(&["hello.c", "error:"]);
    t.assert_line(&["pacman -Syu --ignore hello-dkms"]);
    assert_eq!(root.version_of("hello-dkms").as_deref(), Some(HELLO_1_0.version));
    assert_eq!(root.snapshot(KEPT), before, "the aborted transaction changed the system");
    root.assert_modules(&[(HELLO_1_0, &[LINUX])]);

    configure(&root, "critical = [\"hel*\"]\nguard = false\n");
    let t = root.pacman(&["-Syu"]);
    assert_eq!(t.code, Some(0), "pacman -Syu failed:\n{}", t.output);
    t.assert_contains("DKMS guard off (guard = false in the configuration)");
    t.assert_line(&["hello/1.1 for", LINUX.kver, "failed", "kept hello/1.0"]);
    assert_eq!(root.version_of("hello-dkms").as_deref(), Some(HELLO_1_1_BROKEN.version));
    assert_eq!(root.modinfo(&format!("usr/lib/modules/{}/updates/dkms/hello.ko", LINUX.kver), "version"), "1.0");
    assert_loaded(&root, LINUX, &["hello"]);
    assert_eq!(root.boot_plans()[0].load[0].state, "kept");
}

/// The first module of a system, installed with `pacman -S`: dkms has no signing key yet. The
/// guard's builds sign with a key dkms makes for them, which the install hook makes the root's
/// own; the builds are installed as they are, and no make runs after the guard.
fn first_module_before_dkms_has_a_key(dkms: Dkms) {
    let Some(root) = Root::new(dkms) else { return };
    root.install_kernels(&[LINUX]);
    assert!(!root.path("var/lib/dkms/mok.key").exists());
    root.serve(&[HELLO_1_0.pkg()]);
    root.record_make();

    let t = root.pacman(&["-Sy", HELLO_1_0.package]);
    assert_eq!(t.code, Some(0), "pacman -S failed:\n{}", t.output);
    t.assert_hooks_ok();
    t.assert_line(&["hello/1.0 for", LINUX.kver, "installed (built before the transaction)"]);
    let builds: Vec<String> = root.make_calls().into_iter().filter(|m| m.ends_with(" modules")).collect();
    assert_eq!(builds.len(), 1, "{builds:#?}");
    assert!(builds[0].contains(" M=/var/lib/dkms-hook/prebuilt/"), "{builds:#?}");
    root.assert_modules(&[(HELLO_1_0, &[LINUX])]);
    let key = root.path("var/lib/dkms/mok.key").exists() && root.path("var/lib/dkms/mok.pub").exists();
    let signer = root.modinfo(&format!("usr/lib/modules/{}/updates/dkms/hello.ko", LINUX.kver), "signer");
    if root.dkms_version() < (3, 3) {
        // The module is signed with the key the root has now.
        assert!(key, "dkms made no key");
        assert!(!signer.is_empty(), "hello.ko is not signed");
    } else {
        // pacman runs the hooks chrooted into the root: dkms >= 3.3 signs nothing and makes no
        // key there, and neither does dkms-hook (`real_signing.rs` has the booted system).
        assert!(!key, "a key was made in a chroot");
        assert_eq!(signer, "", "hello.ko is signed in a chroot");
    }
    assert!(!root.path("var/lib/dkms-hook/prebuilt").exists());
    assert_loaded(&root, LINUX, &["hello"]);
}

/// The package files of PKGS copied into the root's package cache (as pacman keeps them), as host
/// paths for `pacman -U`.
fn cached(root: &Root, pkgs: &[Pkg]) -> Vec<String> {
    pkgs.iter()
        .map(|p| {
            let file = p.file();
            let cached = root.path("var/cache/pacman/pkg").join(file.file_name().unwrap());
            fs::copy(&file, &cached).expect("cannot copy a package into the root's cache");
            cached.to_str().unwrap().to_owned()
        })
        .collect()
}

/// (f) `pacman -U linux-…` (the usual way back to an older kernel), while a critical module is
/// installed: the kernel comes without its headers, so nothing can be built for it and the kernel
/// it replaces takes its modules along. pacman stops before any package is touched, naming the
/// headers to install; with them, the same upgrade goes through and the module loads in the new
/// kernel.
fn kernel_without_headers(dkms: Dkms) {
    let Some(root) = system_with(dkms, &[HELLO_1_0]) else { return };
    configure(&root, "critical = [\"hello\"]\n");
    let kernel = cached(&root, &[LINUX_NEXT.pkg()]);
    let before = root.snapshot(KEPT);

    let t = root.pacman(&["-U", &kernel[0]]);
    assert_ne!(t.code, Some(0), "pacman did not abort:\n{}", t.output);
    t.assert_contains(ABORTED);
    t.assert_line(&[
        &format!("error: kernel {} (linux) comes without its headers", LINUX_NEXT.kver),
        "hello is critical and cannot be built for it",
    ]);
    t.assert_line(&["-> install linux-headers as well: pacman -S linux-headers"]);
    assert_eq!(root.version_of("linux").as_deref(), Some(LINUX.version));
    assert_eq!(root.snapshot(KEPT), before, "the aborted transaction changed the system");
    root.assert_modules(&[(HELLO_1_0, &[LINUX])]);
    nothing_of_the_new_kernel(&root);

    let both = cached(&root, &[LINUX_NEXT.pkg(), LINUX_NEXT.headers()]);
    let t = root.pacman(&["-U", &both[0], &both[1]]);
    assert_eq!(t.code, Some(0), "pacman -U failed:\n{}", t.output);
    t.assert_hooks_ok();
    t.assert_line(&["hello/1.0 for", LINUX_NEXT.kver, "installed (built before the transaction)"]);
    root.assert_modules(&[(HELLO_1_0, &[LINUX_NEXT])]);
    assert_loaded(&root, LINUX_NEXT, &["hello"]);
}

/// (g) `pacman -S linux-headers` on a system whose kernel is older: the headers of a kernel that is
/// neither installed nor coming. Nothing is built for it (a critical module that would not
/// compile there stops nothing), the installed modules stay, and they load.
fn headers_without_kernel(dkms: Dkms) {
    let Some(root) = system_with(dkms, &[HELLO_1_0, RTFAIL]) else { return };
    configure(&root, "critical = [\"rtfail\"]\n");
    root.serve(&[LINUX_NEXT.headers()]);

    let t = root.pacman(&["-Sy", &LINUX_NEXT.headers_name()]);
    assert_eq!(t.code, Some(0), "pacman -S failed:\n{}", t.output);
    t.assert_hooks_ok();
    t.assert_lacks("Test-building");
    t.assert_lacks("rtfail/1.0 for");
    assert_eq!(root.version_of("linux-headers").as_deref(), Some(LINUX_NEXT.version));
    let tree = root.dkms_tree();
    assert!(
        tree.built.iter().all(|(_, _, k)| k != LINUX_NEXT.kver),
        "built for a kernel that is not installed: {:?}",
        tree.built
    );
    root.assert_modules(&[(HELLO_1_0, &[LINUX]), (RTFAIL, &[LINUX])]);
    assert_loaded(&root, LINUX, &["hello", "rtfail"]);
}
