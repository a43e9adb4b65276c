//! The Arch packaging, checked as files in seconds: `.SRCINFO` is what `makepkg --printsrcinfo`
//! makes of the PKGBUILD (the project's makepkg, run unprivileged as makepkg requires), the
//! PKGBUILD's pkgver is the crate's version, and shellcheck finds nothing in the PKGBUILDs (with
//! makepkg's own variables allowed) or the project's shell scripts. Building the package and
//! installing it with pacman is the real tier's job (`tests/real_package.rs`).

mod real;

use std::path::{Path, PathBuf};
use std::process::Command;

use real::{pkgbuild_var, PKGBUILD};

fn repo(rel: &str) -> PathBuf {
    Path::new(real::REPO).join(rel)
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

/// The shell scripts of the project: files with a bash shebang or a `# shellcheck shell=bash`
/// directive, outside build output and dependencies.
fn shell_scripts() -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        const SKIP: &[&str] = &["target", ".deps", ".git", "fuzz", "packaging/arch/src", "packaging/arch/pkg"];
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let kind = entry.file_type().unwrap();
            if kind.is_dir() && !SKIP.contains(&path.as_str()) {
                walk(&entry.path(), &path, out);
            } else if kind.is_file() && !path.ends_with("PKGBUILD") {
                let head: String = std::fs::read(entry.path())
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                    .unwrap_or_default();
                if head.starts_with("#!/bin/bash")
                    || head.starts_with("#!/usr/bin/env bash")
                    || head.starts_with("# shellcheck shell=bash")
                {
                    out.push(path);
                }
            }
        }
    }
    let mut scripts = Vec::new();
    walk(Path::new(real::REPO), "", &mut scripts);
    scripts.sort();
    for must in ["scripts/demo", "scripts/dist", "scripts/env", "scripts/lib/overlay-root.sh", "tests/common/fake-dkms"]
    {
        assert!(scripts.iter().any(|s| s == must), "{must} is not among the shell scripts found: {scripts:?}");
    }
    scripts
}

/// Runs shellcheck from the repository with ARGS; `None` when it is not installed (the common skip
/// rule: a failure under CI).
fn shellcheck(args: &[&str]) -> Option<(bool, String)> {
    let out = match Command::new("shellcheck").args(args).current_dir(real::REPO).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = "shellcheck is not installed: run scripts/setup";
            assert!(!real::skip::can_run("the shell lint", Some(why.to_owned())));
            return None;
        }
        Err(e) => panic!("cannot run shellcheck: {e}"),
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), text))
}

/// makepkg defines `srcdir`/`pkgdir` and reads `pkgname`, `depends`, …, and runs each function
/// under `set -e`: the usual exclusions for PKGBUILDs.
#[test]
fn shellcheck_passes_the_pkgbuilds() {
    let args = ["--shell=bash", "--severity=warning", "--exclude=SC2034,SC2154,SC2164", PKGBUILD];
    let Some((ok, text)) = shellcheck(&[&args[..], &["examples/hello-dkms/PKGBUILD"]].concat()) else {
        return;
    };
    assert!(ok, "shellcheck on the PKGBUILDs:\n{text}");
}

#[test]
fn shellcheck_passes_the_shell_scripts() {
    let scripts = shell_scripts();
    let mut args = vec!["--external-sources", "--severity=warning"];
    args.extend(scripts.iter().map(String::as_str));
    let Some((ok, text)) = shellcheck(&args) else {
        return;
    };
    assert!(ok, "shellcheck on {scripts:?}:\n{text}");
}
