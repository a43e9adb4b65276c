//! The one skip rule for tests that need what a machine may lack (root, overlayfs, real kernel
//! headers, the real dkms, pacman 7.1): under CI (the `CI` variable set to any non-empty value) a
//! missing prerequisite fails the test; elsewhere the test reports itself skipped and returns.
//! The report is a `test-skip: TIER: WHY` line written straight to stderr (past the test
//! harness's capture), which `scripts/test` counts in its summary line.

use std::io::Write;

/// True when `missing` is `None`; otherwise fails under CI, or reports the skip and returns false
/// (the caller returns at once).
#[track_caller]
pub fn can_run(tier: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else { return true };
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{tier} cannot run in CI: {why}");
    }
    let _ = writeln!(std::io::stderr(), "test-skip: {tier}: {why}");
    false
}

/// Why a test that needs root cannot run, if it cannot.
pub fn root_missing() -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| "it needs root".to_owned())
}

/// Why a test that runs the real dkms against the real headers of `kernels` cannot run, if it
/// cannot: it needs root (dkms builds as root), dkms, and Debian's headers (scripts/setup).
pub fn real_dkms_missing(kernels: &[&str]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (dkms builds as root)".into());
    }
    if std::process::Command::new("dkms").arg("--version").output().is_err() {
        return Some("dkms is not installed: run scripts/setup".into());
    }
    kernels
        .iter()
        .find(|k| !std::path::Path::new(&format!("/usr/src/linux-headers-{k}/Makefile")).exists())
        .map(|k| format!("no headers for {k}: run scripts/setup"))
}
