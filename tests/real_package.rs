//! dkms-hook as an Arch user meets it: makepkg (as nobody) builds the package from a clean clone of
//! the repository's HEAD with `packaging/arch/PKGBUILD`; the real pacman 7.1 installs it into an
//! overlay root that has neither the project's hooks nor its binary; the package's files are exactly
//! the binary, every hook of `hooks/`, the man pages and completions the binary writes, the docs and
//! the license; `dkms-hook --version` is the PKGBUILD's pkgver; a module package goes through the
//! installed hooks and binary and is built for both kernels; removing the module and then dkms-hook
//! leaves nothing of either. pacman's own hook parser must accept every hook file in every
//! transaction.
//!
//! The package is built once per test process (minutes: a release build with LTO) from committed
//! content only: commit a change to see it here. Needs root and scripts/setup like the rest of the
//! real tier (`tests/real/mod.rs`); skipped with a message otherwise, but fails in CI (`CI=true`).

mod real;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use real::*;

/// Both kernels of the module transaction.
const BOTH: &[Kernel] = &[LINUX, LINUX_CLOUD];

/// What the package depends on besides dkms: file-less stand-ins in the root's pacman DB (the
/// overlay root has the real programs from the host).
const DEPENDS: &[&str] = &["bash", "gcc-libs", "glibc", "kmod", "pacman"];

/// The names of the files in the repository's directory `rel` (optionally only those ending in `ext`).
fn files_in(rel: &str, ext: &str) -> Vec<String> {
    let names: Vec<String> = list(&Path::new(REPO).join(rel)).into_iter().filter(|n| n.ends_with(ext)).collect();
    assert!(!names.is_empty(), "{rel} has no {ext} files");
    names
}

/// The man pages the binary writes, by file name.
fn man_page_names() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dkms-hook"))
        .args(["generate", "man"])
        .arg(dir.path())
        .output()
        .expect("cannot run dkms-hook generate man");
    assert!(out.status.success(), "dkms-hook generate man: {}", String::from_utf8_lossy(&out.stderr));
    list(dir.path())
}

/// Every file (not directory) the package must install, as paths below the root.
fn expected_files() -> BTreeSet<String> {
    let mut files = BTreeSet::from([
        "usr/bin/dkms-hook".to_owned(),
        "usr/lib/dkms-hook/dkms-hook-full".to_owned(),
        "usr/share/bash-completion/completions/dkms-hook".to_owned(),
        "usr/share/zsh/site-functions/_dkms-hook".to_owned(),
        "usr/share/fish/vendor_completions.d/dkms-hook.fish".to_owned(),
        "usr/share/licenses/dkms-hook/LICENSE".to_owned(),
        "usr/share/doc/dkms-hook/README.md".to_owned(),
    ]);
    files.extend(files_in("hooks", ".hook").iter().map(|h| hook_path(h)));
    // makepkg compresses man pages (`zipman` in makepkg.conf).
    for page in man_page_names() {
        let section = page.rsplit('.').next().unwrap();
        files.insert(format!("usr/share/man/man{section}/{page}.gz"));
    }
    files.extend(files_in("docs", ".md").iter().map(|d| format!("usr/share/doc/dkms-hook/{d}")));
    files.extend(
        files_in("examples/hello-dkms", "").iter().map(|f| format!("usr/share/doc/dkms-hook/examples/hello-dkms/{f}")),
    );
    files
}

/// Where the package installs hook file NAME: the guard in the packages' hook directory (relative
/// to pacman's --root: it runs only in roots with dkms-hook), the others in the administrator's
/// (they override the stock dkms hooks of the same names).
fn hook_path(name: &str) -> String {
    match name {
        "10-dkms-guard.hook" => format!("usr/share/libalpm/hooks/{name}"),
        _ => format!("etc/pacman.d/hooks/{name}"),
    }
}

/// The files (not directories) of installed package NAME, below the root.
fn package_files(root: &Root, name: &str) -> BTreeSet<String> {
    let t = root.pacman(&["-Qlq", name]);
    assert_eq!(t.code, Some(0), "pacman -Ql {name}:\n{}", t.output);
    let prefix = format!("{}/", root.root.display());
    t.output
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.strip_prefix(&prefix).unwrap_or_else(|| panic!("{l} is not below the root")).to_owned())
        .collect()
}

/// The text of a file in the root, decompressed when it is a `.gz`.
fn text_in_root(root: &Root, rel: &str) -> String {
    let path = root.path(rel);
    if rel.ends_with(".gz") {
        let out = Command::new("zcat").arg(&path).output().expect("cannot run zcat");
        assert!(out.status.success(), "zcat {}", path.display());
        String::from_utf8(out.stdout).unwrap()
    } else {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

#[test]
fn the_package_installs_its_files_runs_the_hooks_and_leaves_nothing_behind() {
    let Some(root) = Root::new_without_hooks(Dkms::V3_0) else { return };
    assert!(!root.path("usr/bin/dkms-hook").exists(), "the root has a dkms-hook before the package");
    assert_eq!(list(&root.path("etc/pacman.d/hooks")), Vec::<String>::new(), "the root has hooks before the package");
    assert_eq!(
        list(&root.path("usr/share/libalpm/hooks")),
        Vec::<String>::new(),
        "the root has hooks before the package"
    );

    let stubs: Vec<Pkg> = DEPENDS.iter().map(|d| Pkg::Stub(d, "1-1")).collect();
    root.install(&stubs).assert_hook_files_accepted();
    let t = root.install(&[Pkg::DkmsHook]);
    t.assert_hooks_ok().assert_hook_files_accepted();

    // Exactly the files it should have, intact, hooks and license as in the repository.
    let files = package_files(&root, "dkms-hook");
    let expected = expected_files();
    let missing: Vec<_> = expected.difference(&files).collect();
    let extra: Vec<_> = files.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the dkms-hook package lacks {missing:?} and has unexpected {extra:?} (packaging/arch/PKGBUILD's package())"
    );
    let check = root.pacman(&["-Qkk", "dkms-hook"]);
    assert_eq!(check.code, Some(0), "pacman -Qkk dkms-hook:\n{}", check.output);
    for hook in files_in("hooks", ".hook") {
        let shipped = std::fs::read_to_string(Path::new(REPO).join("hooks").join(&hook)).unwrap();
        assert_eq!(text_in_root(&root, &hook_path(&hook)), shipped, "{hook}");
    }
    let license = std::fs::read_to_string(Path::new(REPO).join("LICENSE")).unwrap();
    assert_eq!(text_in_root(&root, "usr/share/licenses/dkms-hook/LICENSE"), license);

    // The version is the PKGBUILD's, and the pages and completions are what the installed binary writes.
    let pkgver = pkgbuild_var("pkgver");
    let version = root.chroot(&["dkms-hook", "--version"]);
    assert_eq!(version.output.trim(), format!("dkms-hook {pkgver}"), "dkms-hook --version in the root");
    let query = root.pacman(&["-Q", "dkms-hook"]);
    assert_eq!(query.output.trim(), format!("dkms-hook {pkgver}-{}", pkgbuild_var("pkgrel")));
    let ran = root.chroot(&["dkms-hook", "generate", "man", "/tmp/dkms-hook-man"]);
    assert!(ran.status.success(), "dkms-hook generate man in the root: {}", ran.output);
    for page in man_page_names() {
        let section = page.rsplit('.').next().unwrap();
        let installed = text_in_root(&root, &format!("usr/share/man/man{section}/{page}.gz"));
        assert_eq!(installed, text_in_root(&root, &format!("tmp/dkms-hook-man/{page}")), "{page}");
    }
    for (shell, file) in [
        ("bash", "usr/share/bash-completion/completions/dkms-hook"),
        ("zsh", "usr/share/zsh/site-functions/_dkms-hook"),
        ("fish", "usr/share/fish/vendor_completions.d/dkms-hook.fish"),
    ] {
        let script = root.chroot(&["dkms-hook", "generate", "completions", shell]);
        assert!(script.status.success() && script.output.contains("dkms-hook"), "{shell}: {}", script.output);
        assert_eq!(text_in_root(&root, file), script.output, "{file}");
    }

    // A module package, through the installed hooks and binary.
    root.install_kernels(BOTH).assert_hook_files_accepted();
    let t = root.install(&[HELLO_1_0.pkg()]);
    t.assert_contains("Install DKMS modules").assert_hooks_ok().assert_hook_files_accepted();
    for k in BOTH {
        t.assert_line(&["hello/1.0", k.kver, "installed"]);
    }
    root.assert_modules(&[(HELLO_1_0, BOTH)]);

    let t = root.remove(&[HELLO_1_0.package]);
    t.assert_contains("Remove the DKMS modules of what leaves").assert_hooks_ok().assert_hook_files_accepted();
    root.assert_modules(&[]);

    // Removing the package leaves none of its files.
    root.remove(&["dkms-hook"]).assert_hooks_ok().assert_hook_files_accepted();
    assert!(!root.has_package("dkms-hook"));
    let left: Vec<&String> = files.iter().filter(|f| root.path(f).symlink_metadata().is_ok()).collect();
    assert!(left.is_empty(), "pacman -R dkms-hook left {left:?}");
    for dir in ["usr/share/doc/dkms-hook", "usr/share/licenses/dkms-hook"] {
        assert!(!root.path(dir).exists(), "pacman -R dkms-hook left {dir}");
    }
}

/// The check above can fail: pacman reports a hook file it cannot parse.
#[test]
fn pacman_reports_a_hook_file_it_cannot_parse() {
    let Some(root) = Root::new_without_hooks(Dkms::V3_0) else { return };
    let good = std::fs::read_to_string(Path::new(REPO).join("hooks/70-dkms-install.hook")).unwrap();
    let bad = good.replace("When = PostTransaction", "When = AfterTransaction");
    assert_ne!(bad, good);
    std::fs::write(root.path("etc/pacman.d/hooks/70-dkms-install.hook"), bad).unwrap();
    let t = root.pacman(&["-U", Pkg::Stub("bash", "1-1").file().to_str().unwrap()]);
    let errors = t.hook_file_errors();
    assert!(
        errors.iter().any(|l| l.contains("70-dkms-install.hook") && l.contains("invalid value AfterTransaction")),
        "pacman's complaint about `When = AfterTransaction` is not among {errors:?}:\n{}",
        t.output
    );
}
