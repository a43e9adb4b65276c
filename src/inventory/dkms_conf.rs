//! The values dkms-hook needs from a module's dkms.conf: PACKAGE_NAME, PACKAGE_VERSION,
//! BUILD_DEPENDS and BUILD_EXCLUSIVE_KERNEL.
//!
//! dkms.conf is a bash script that dkms sources, so it is read by bash, never with regexes: in a
//! clean environment, with stdin closed, its own output discarded, and a time limit. bash prints
//! the values NUL-separated as `KEY=value`; `parse_output` (pure) turns that into a `DkmsConf`
//! and validates the name and version before they can become paths or arguments.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long sourcing one dkms.conf may take before it is killed.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The dkms.conf values dkms-hook uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkmsConf {
    /// PACKAGE_NAME.
    pub name: String,
    /// PACKAGE_VERSION.
    pub version: String,
    /// BUILD_DEPENDS: module names that must be installed for a kernel before this one builds.
    pub build_depends: Vec<String>,
}

/// Sources the file and prints the values; `$1` is the file. dkms's own variables are set so a
/// dkms.conf that uses them (or `set -u`) reads as it would under dkms.
const READER: &str = r#"
kernelver=""; arch="$(uname -m 2>/dev/null)"; dkms_tree=/var/lib/dkms; source_tree=/usr/src
kernel_source_dir=""; install_tree=/usr/lib/modules
source -- "$1" >/dev/null </dev/null
printf 'PACKAGE_NAME=%s\0PACKAGE_VERSION=%s\0' "$PACKAGE_NAME" "$PACKAGE_VERSION"
printf 'BUILD_DEPENDS=%s\0' "${BUILD_DEPENDS[*]}"
"#;

/// Directory names under `source_tree` that hold a dkms.conf (a missing tree means none).
pub fn source_dirs(source_tree: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(source_tree) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("failed to list {}", source_tree.display())),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", source_tree.display()))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if crate::targets::is_clean_component(&name) && entry.path().join("dkms.conf").is_file() {
            dirs.push(name);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Reads one dkms.conf; the error is a complete sentence naming the file and the fix.
pub fn read(path: &Path) -> Result<DkmsConf, String> {
    let (output, errors) = source(path).map_err(|e| format!("{}: {e:#}", path.display()))?;
    parse_output(&output).map_err(|e| {
        // A syntax error shows up as empty values; bash's first complaint says where.
        let bash = String::from_utf8_lossy(&errors);
        match bash.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(first) => format!("{}: {e} ({first}): fix the file", path.display()),
            None => format!("{}: {e}: fix the PACKAGE_NAME/PACKAGE_VERSION lines", path.display()),
        }
    })
}

/// Runs bash on the file with a clean environment and a time limit; returns stdout and stderr.
fn source(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    if !path.is_file() {
        anyhow::bail!("no such file");
    }
    let dir = path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut child = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", READER, "dkms-hook", &path.to_string_lossy()])
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to run bash")?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // Read both pipes on threads so a chatty script cannot block on a full pipe.
    let out = std::thread::spawn(move || read_capped(&mut stdout));
    let err = std::thread::spawn(move || read_capped(&mut stderr));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("failed to wait for bash")? {
            break status;
        }
        if started.elapsed() > READ_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("sourcing it took longer than {} s: fix the file", READ_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let msg = String::from_utf8_lossy(&err);
        let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("bash failed");
        anyhow::bail!("bash could not read it: {}", first.trim());
    }
    Ok((out, err))
}

/// Reads at most 1 MiB; the rest is drained and dropped.
fn read_capped(r: &mut impl Read) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = r.take(1 << 20).read_to_end(&mut buf);
    let _ = std::io::copy(r, &mut std::io::sink());
    buf
}

/// Parses the reader's NUL-separated `KEY=value` records and validates them.
pub fn parse_output(output: &[u8]) -> Result<DkmsConf, String> {
    let mut name = None;
    let mut version = None;
    let mut depends = Vec::new();
    for record in output.split(|&b| b == 0) {
        let record = std::str::from_utf8(record).map_err(|_| "a value is not valid UTF-8".to_owned())?;
        match record.split_once('=') {
            Some(("PACKAGE_NAME", v)) => name = Some(v.to_owned()),
            Some(("PACKAGE_VERSION", v)) => version = Some(v.to_owned()),
            Some(("BUILD_DEPENDS", v)) => depends = v.split_whitespace().map(str::to_owned).collect(),
            _ => {}
        }
    }
    let name = name.unwrap_or_default();
    let version = version.unwrap_or_default();
    check_value("PACKAGE_NAME", &name)?;
    check_value("PACKAGE_VERSION", &version)?;
    for dep in &depends {
        check_value("BUILD_DEPENDS", dep)?;
    }
    Ok(DkmsConf { name, version, build_depends: depends })
}

/// A name or version must be usable as one path component and one argument.
fn check_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{key} is empty"));
    }
    if !crate::targets::is_clean_component(value) || value.chars().any(char::is_whitespace) || value.contains('/') {
        return Err(format!("{key} {value:?} is not a valid name (no '/', spaces, '..' or leading '-')"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        let c = parse_output(b"PACKAGE_NAME=xpad-neo-x\0PACKAGE_VERSION=0.9-r12-g3a1b\0BUILD_DEPENDS=a  b\0").unwrap();
        assert_eq!(c.name, "xpad-neo-x");
        assert_eq!(c.version, "0.9-r12-g3a1b");
        assert_eq!(c.build_depends, ["a", "b"]);
    }

    #[test]
    fn rejects_bad_values() {
        for (input, want) in [
            (&b"PACKAGE_NAME=\0PACKAGE_VERSION=1\0"[..], "PACKAGE_NAME is empty"),
            (b"PACKAGE_NAME=a\0", "PACKAGE_VERSION is empty"),
            (b"PACKAGE_NAME=../../etc\0PACKAGE_VERSION=1\0", "not a valid name"),
            (b"PACKAGE_NAME=a b\0PACKAGE_VERSION=1\0", "not a valid name"),
            (b"PACKAGE_NAME=-rf\0PACKAGE_VERSION=1\0", "not a valid name"),
            (b"PACKAGE_NAME=a\0PACKAGE_VERSION=..\0", "not a valid name"),
            (b"PACKAGE_NAME=\xff\0", "UTF-8"),
        ] {
            let err = parse_output(input).unwrap_err();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }
}
