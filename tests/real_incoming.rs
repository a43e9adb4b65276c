//! Module upgrades whose package files lie where pacman, not dkms-hook, chose: a file outside the
//! root given to `pacman --root R -U` (as `pacstrap -U` does), a `-U file://` URL (pacman downloads
//! it into its cache), and a sync package found in the second `CacheDir` of pacman.conf while the
//! first cache holds a stale file of the next kernel (left there by a stopped upgrade, which the
//! retry ignores). Each time, a new version that does not compile leaves the working one installed
//! for every kernel, and one that compiles is the only one left. Real pacman 7.1, real dkms, real
//! kernel headers, in throwaway overlay roots (see `tests/real/mod.rs`); each scenario runs with
//! dkms 3.0.10 and 3.2.2 and ends with the boot check.
//!
//! Needs root and scripts/setup; skipped with a message otherwise, but fails in CI (`CI=true`).
//! `cargo test --test real_incoming -- --nocapture` shows every transaction's output.

#[macro_use]
mod real;

use std::fs;
use std::path::{Path, PathBuf};

use real::*;

/// Both kernels of the first two scenarios.
const BOTH: &[Kernel] = &[LINUX, LINUX_CLOUD];

for_each_dkms! {
    upgrade_from_a_file_outside_the_root => i1_upgrade_from_a_file_outside_the_root_dkms_3_0,
        i1_upgrade_from_a_file_outside_the_root_dkms_3_2;
    upgrade_from_a_file_url => i2_upgrade_from_a_file_url_dkms_3_0, i2_upgrade_from_a_file_url_dkms_3_2;
    upgrade_from_a_second_cache_beside_a_stale_kernel =>
        i3_upgrade_from_a_second_cache_beside_a_stale_kernel_dkms_3_0,
        i3_upgrade_from_a_second_cache_beside_a_stale_kernel_dkms_3_2;
}

/// KERNELS with headers, and hello 1.0 installed for each.
fn hello_installed(dkms: Dkms, kernels: &[Kernel]) -> Option<Root> {
    let root = Root::new(dkms)?;
    root.install_kernels(kernels);
    root.install(&[HELLO_1_0.pkg()]).assert_hooks_ok();
    root.assert_modules(&[(HELLO_1_0, kernels)]);
    Some(root)
}

/// hello `version` is what is installed for each of KERNELS: the module file's `version`
/// (modinfo) and `dkms status`.
fn hello_is(root: &Root, version: &str, kernels: &[Kernel]) {
    let status = root.chroot(&["dkms", "status"]);
    for k in kernels {
        let ko = format!("usr/lib/modules/{}/updates/dkms/hello.ko", k.kver);
        assert_eq!(root.modinfo(&ko, "version"), version, "the version of {ko}");
        let line = status.text().lines().find(|l| l.starts_with(&format!("hello/{version}, {}", k.kver)));
        assert!(line.is_some_and(|l| l.ends_with("installed")), "dkms status:\n{}", status.text());
    }
}

/// Only hello `version` is left: in the dkms tree, as the only module installed for each of
/// KERNELS, and nothing kept aside.
fn only_hello(root: &Root, module: Module, kernels: &[Kernel]) {
    root.assert_modules(&[(module, kernels)]);
    let versions: Vec<String> =
        list(&root.path("var/lib/dkms/hello")).into_iter().filter(|n| !n.starts_with("kernel-")).collect();
    assert_eq!(versions, [module.modver], "hello versions in the dkms tree");
    assert!(!root.path("var/lib/dkms-hook/kept").exists(), "dkms-hook still keeps sources");
    hello_is(root, module.modver, kernels);
}

/// The install hook failed to build hello 1.1 for each of KERNELS and kept 1.0 installed.
fn kept_hello_1_0(root: &Root, t: &Transaction, kernels: &[Kernel]) {
    assert_eq!(t.code, Some(0), "pacman failed:\n{}", t.output);
    assert_eq!(root.version_of(HELLO_1_1_BROKEN.package).as_deref(), Some(HELLO_1_1_BROKEN.version));
    for k in kernels {
        t.assert_line(&["hello/1.1 for", k.kver, "failed", "kept hello/1.0 (the version that was installed)"]);
    }
    hello_is(root, "1.0", kernels);
}

/// The guard test-built hello 1.1 for each of KERNELS (it found the package file) and warned
/// before pacman changed anything.
fn guard_warned(t: &Transaction, kernels: &[Kernel]) {
    let first_change = t
        .output
        .lines()
        .position(|l| l.contains("upgrading ") || l.contains("installing "))
        .unwrap_or_else(|| panic!("pacman changed no package:\n{}", t.output));
    for k in kernels {
        let warned = t.assert_line(&["warning: hello/1.1 for", k.kver, "does not build"]);
        assert!(warned < first_change, "the warning came after pacman changed packages:\n{}", t.output);
    }
}

/// The boot check booted exactly KERNELS and each loaded hello `version`.
fn hello_loads(root: &Root, version: &str, kernels: &[Kernel]) {
    let boots = root.assert_modules_load();
    let booted: Vec<&str> = boots.iter().map(|b| b.kernel()).collect();
    let expected: Vec<&str> = kernels.iter().map(|k| k.kver).collect();
    assert_eq!(booted, expected, "the kernels with modules to load");
    for boot in boots {
        assert_eq!(boot.version_of("hello"), Some(version), "{}", boot.summary());
    }
}

/// A package file as the host has it, outside ROOT.
fn outside(root: &Root, pkg: Pkg) -> PathBuf {
    let file = pkg.file();
    assert!(!file.starts_with(&root.root), "{} is inside the root", file.display());
    file
}

/// `pacman --root R -U /outside/hello…`: no hook can read the file (pacman runs them chrooted into
/// R). A 1.1 that does not compile leaves 1.0 installed for both kernels; 1.2, which compiles,
/// is then the only version left.
fn upgrade_from_a_file_outside_the_root(dkms: Dkms) {
    let Some(root) = hello_installed(dkms, BOTH) else { return };

    let broken = outside(&root, HELLO_1_1_BROKEN.pkg());
    let t = root.pacman(&["-U", broken.to_str().unwrap()]);
    kept_hello_1_0(&root, &t, BOTH);

    let good = outside(&root, HELLO_1_2.pkg());
    root.pacman(&["-U", good.to_str().unwrap()]).assert_hooks_ok();
    only_hello(&root, HELLO_1_2, BOTH);
    hello_loads(&root, "1.2", BOTH);
}

/// `pacman -U file:///outside/hello…`: pacman copies the file into its cache, where the hooks find
/// it. The guard test-builds 1.1 for both kernels and warns; 1.0 stays installed for both; then
/// 1.2 is built by the guard and is the only version left.
fn upgrade_from_a_file_url(dkms: Dkms) {
    let Some(root) = hello_installed(dkms, BOTH) else { return };
    let url = |file: &Path| format!("file://{}", file.display());

    let t = root.pacman(&["-U", &url(&outside(&root, HELLO_1_1_BROKEN.pkg()))]);
    guard_warned(&t, BOTH);
    kept_hello_1_0(&root, &t, BOTH);

    let t = root.pacman(&["-U", &url(&outside(&root, HELLO_1_2.pkg()))]);
    t.assert_hooks_ok();
    for k in BOTH {
        t.assert_line(&["hello/1.2 for", k.kver, "installed (built before the transaction)"]);
    }
    only_hello(&root, HELLO_1_2, BOTH);
    hello_loads(&root, "1.2", BOTH);
}

/// pacman.conf names two more caches (`CacheDir` twice); hello's sync package is in the second
/// one, so pacman downloads nothing. The first cache still holds the next kernel's files from an
/// upgrade that was stopped; the retry ignores the kernel (`-Syu --ignore linux,linux-headers`).
/// The kernel stays, the guard test-builds hello 1.1 for it and warns, 1.0 stays installed; then
/// 1.2 is built by the guard and is the only version left.
fn upgrade_from_a_second_cache_beside_a_stale_kernel(dkms: Dkms) {
    let Some(root) = hello_installed(dkms, &[LINUX]) else { return };
    let caches = [root.path("var/cache/first"), root.path("var/cache/second")];
    for dir in &caches {
        fs::create_dir_all(dir).unwrap();
    }
    // pacman's configuration names the caches as the host sees them (pacman resolves them there).
    let conf = root.path("etc/pacman.conf");
    let lines: String = caches.iter().map(|d| format!("CacheDir = {}\n", d.display())).collect();
    let text = fs::read_to_string(&conf).unwrap().replacen("[options]\n", &format!("[options]\n{lines}"), 1);
    fs::write(&conf, text).unwrap();
    // Put into a cache as pacman names it (the file name the repository's database gives).
    let cache = |dir: &Path, pkg: Pkg| {
        let file = pkg.file();
        fs::copy(&file, dir.join(file.file_name().unwrap())).unwrap();
    };
    root.serve(&[LINUX_NEXT.pkg(), LINUX_NEXT.headers(), HELLO_1_1_BROKEN.pkg()]);
    for pkg in [LINUX_NEXT.pkg(), LINUX_NEXT.headers()] {
        cache(&caches[0], pkg);
    }
    cache(&caches[1], HELLO_1_1_BROKEN.pkg());

    let t = root.pacman(&["-Syu", "--ignore", "linux,linux-headers"]);
    assert_eq!(root.version_of("linux").as_deref(), Some(LINUX.version));
    guard_warned(&t, &[LINUX]);
    kept_hello_1_0(&root, &t, &[LINUX]);

    root.serve(&[HELLO_1_2.pkg()]);
    cache(&caches[1], HELLO_1_2.pkg());
    let t = root.pacman(&["-Syu", "--ignore", "linux,linux-headers"]);
    t.assert_hooks_ok();
    t.assert_line(&["hello/1.2 for", LINUX.kver, "installed (built before the transaction)"]);
    assert_eq!(root.version_of("linux").as_deref(), Some(LINUX.version));
    only_hello(&root, HELLO_1_2, &[LINUX]);
    hello_loads(&root, "1.2", &[LINUX]);
}
