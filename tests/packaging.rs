//! The Arch packaging, checked as files in seconds: `.SRCINFO` is what `makepkg --printsrcinfo`
//! makes of the PKGBUILD (the project's makepkg, run unprivileged as makepkg requires), and the
//! PKGBUILD's pkgver is the crate's version.

mod real;

use std::path::{Path, PathBuf};

const PKGBUILD: &str = "packaging/arch/PKGBUILD";

fn repo(rel: &str) -> PathBuf {
    Path::new(real::REPO).join(rel)
}

/// A variable assigned at the start of a line of the PKGBUILD (`pkgver=0.1.0`).
fn pkgbuild_var(name: &str) -> String {
    let text = std::fs::read_to_string(repo(PKGBUILD)).unwrap();
    let prefix = format!("{name}=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{PKGBUILD} assigns no {name}"))
        .to_owned()
}

#[test]
fn srcinfo_is_what_makepkg_prints_for_the_pkgbuild() {
    let pkgbuild = repo(PKGBUILD);
    let ran = real::shell("pkg_srcinfo", &[pkgbuild.to_str().unwrap()]);
    assert!(ran.status.success(), "makepkg --printsrcinfo failed:\n{}", ran.output);
    assert!(ran.output.starts_with("pkgbase = dkms-hook\n"), "makepkg --printsrcinfo printed:\n{}", ran.output);
    let committed = std::fs::read_to_string(repo("packaging/arch/.SRCINFO")).unwrap();
    assert!(
        committed == ran.output,
        "packaging/arch/.SRCINFO is stale: regenerate it with\n  \
         (. scripts/env && . scripts/lib/overlay-root.sh && pkg_srcinfo {PKGBUILD} > packaging/arch/.SRCINFO)\n\
         --- committed\n{committed}--- makepkg --printsrcinfo\n{}",
        ran.output
    );
}

#[test]
fn pkgver_is_the_crate_version() {
    assert_eq!(pkgbuild_var("pkgver"), env!("CARGO_PKG_VERSION"), "{PKGBUILD} pkgver and Cargo.toml version");
}
