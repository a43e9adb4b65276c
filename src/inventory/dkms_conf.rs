//! The values dkms-hook needs from a module's dkms.conf: PACKAGE_NAME, PACKAGE_VERSION and
//! BUILD_DEPENDS.
//!
//! dkms.conf is a bash script that dkms sources, so it is read by bash, never with regexes: in a
//! clean environment, with stdin closed, its own output discarded, in its own process group
//! (killed as a whole when done, so nothing it started lingers) and with a time limit, through
//! the process runner. When dkms-hook runs as root, bash runs as `nobody` whenever `nobody` can
//! read the file: reading the values needs no privilege, and a broken or hostile dkms.conf then
//! cannot change the system. Nothing the file prints changes that choice. Only a file `nobody`
//! cannot read is evaluated as root, and only where [`Evaluate::AsDkmsWould`] allows it (the hooks
//! and `sync`, whose dkms sources the file as root anyway); `status` and `lint` never evaluate
//! package code as root. bash prints the values NUL-separated as `KEY=value`; `parse_output`
//! (pure) turns that into a `DkmsConf` and validates the name and version before they can become
//! paths or arguments.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::interrupt::Stop;
use crate::process::{self, Output};

/// How long sourcing one dkms.conf may take before it is killed.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most output kept from the reader (per stream).
const READ_CAP: usize = 1 << 20;

/// The user dkms.conf is read as when dkms-hook runs as root.
const READER_USER: &str = "nobody";

/// Who may evaluate a dkms.conf when dkms-hook runs as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluate {
    /// `nobody` when it can read the file; otherwise root, as dkms itself sources it (the hooks
    /// and `sync`, which go on to run dkms on the module).
    AsDkmsWould,
    /// `nobody` only: a file `nobody` cannot read is reported, never evaluated as root (`status`,
    /// `lint`).
    Unprivileged,
}

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
    let mut dirs: Vec<String> = crate::dirs::names(source_tree)?
        .into_iter()
        .filter(|name| crate::targets::is_clean_component(name) && source_tree.join(name).join("dkms.conf").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Reads one dkms.conf; the error is a complete sentence naming the file and the fix.
pub fn read(path: &Path, evaluate: Evaluate) -> Result<DkmsConf, String> {
    let (output, errors) = source(path, evaluate).map_err(|e| format!("{}: {e:#}", path.display()))?;
    let bash = String::from_utf8_lossy(&errors);
    // bash names the file and line; keep the line, the file is named once already.
    let complaint = |line: &str| {
        let line = line.trim();
        line.strip_prefix(&format!("{}: ", path.display())).unwrap_or(line).to_owned()
    };
    // dkms sources the file as it is: a syntax error, even after the values, means a build
    // that misses whatever comes after it.
    if let Some(syntax) = bash.lines().find(|l| l.contains("syntax error")) {
        return Err(format!("{}: {}: fix the file", path.display(), complaint(syntax)));
    }
    let conf = parse_output(&output).map_err(|e| match bash.lines().find(|l| !l.trim().is_empty()) {
        Some(first) => format!("{}: {e} ({}): fix the file", path.display(), complaint(first)),
        None => format!("{}: {e}: fix the PACKAGE_NAME/PACKAGE_VERSION lines", path.display()),
    })?;
    check_directory(path, &conf)?;
    Ok(conf)
}

/// dkms finds a module's source at `SOURCETREE/NAME-VERSION`: a dkms.conf in any other
/// directory names a source dkms cannot find (or, worse, another package's).
fn check_directory(path: &Path, conf: &DkmsConf) -> Result<(), String> {
    let Some(dir) = path.parent().and_then(Path::file_name).and_then(|d| d.to_str()) else {
        return Ok(());
    };
    let expected = format!("{}-{}", conf.name, conf.version);
    if dir == expected {
        return Ok(());
    }
    Err(format!(
        "{}: PACKAGE_NAME/PACKAGE_VERSION say {}/{}, but dkms looks for that source in {expected}, not {dir}: \
         fix dkms.conf or the directory name (the package's PKGBUILD)",
        path.display(),
        conf.name,
        conf.version
    ))
}

/// Runs the reader on the file as the user [`reader`] chooses; returns stdout and stderr.
fn source(path: &Path, evaluate: Evaluate) -> Result<(Vec<u8>, Vec<u8>)> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("no such file"),
        _ => anyhow::anyhow!("cannot read it: {e}"),
    })?;
    if !meta.is_file() {
        anyhow::bail!("not a regular file");
    }
    if let Err(e) = std::fs::File::open(path) {
        anyhow::bail!("cannot read it: {e}");
    }
    let dir = path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    run_script(READER, &[path], &dir, reader(path, evaluate)?.as_ref())
}

/// The user to evaluate `path` as: `None` for ourselves when we are not root; `nobody` when we
/// are and `nobody` can read it; root (`None`) only for a file `nobody` cannot read, and only
/// when `evaluate` allows it. The choice depends on the file's permissions alone, never on what
/// an earlier evaluation printed.
fn reader(path: &Path, evaluate: Evaluate) -> Result<Option<nix::unistd::User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(READER_USER).ok().flatten();
    match (user, evaluate) {
        (Some(user), _) if readable_by(path, &user) => Ok(Some(user)),
        (_, Evaluate::AsDkmsWould) => {
            log::debug!("{READER_USER} cannot read {}: reading it as root, as dkms does", path.display());
            Ok(None)
        }
        (Some(_), Evaluate::Unprivileged) => anyhow::bail!(
            "{READER_USER} cannot read it, and dkms-hook does not evaluate package code as root here: \
             make it and its directories world-readable, as packages ship them"
        ),
        (None, Evaluate::Unprivileged) => anyhow::bail!(
            "there is no user {READER_USER} to evaluate it as, and dkms-hook does not evaluate package code as \
             root here: create the user (`systemd-sysusers`)"
        ),
    }
}

/// Whether `user` (with only its primary group) may open `path` for reading: every directory
/// above it searchable, the file readable, by the mode bits.
fn readable_by(path: &Path, user: &nix::unistd::User) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(path) = std::fs::canonicalize(path) else { return false };
    let allowed = |p: &Path, want: u32| -> bool {
        let Ok(m) = std::fs::metadata(p) else { return false };
        let mode = m.mode();
        let bits = if m.uid() == user.uid.as_raw() {
            mode >> 6
        } else if m.gid() == user.gid.as_raw() {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    };
    path.ancestors().skip(1).all(|dir| allowed(dir, 0o1)) && allowed(&path, 0o4)
}

/// Runs a reader script on `files` (its arguments) in `dir`, as `user` if given, with a clean
/// environment, in its own process group and with a time limit; returns stdout and stderr.
fn run_script(
    script: &str,
    files: &[&Path],
    dir: &Path,
    user: Option<&nix::unistd::User>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c", script, "dkms-hook"])
        .args(files)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .current_dir(dir);
    if let Some(user) = user {
        // std drops the supplementary groups when it changes the uid as root.
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    // Reading is quick; a stop request waits for it (the runner stops the jobs).
    let never = Stop::new();
    let opts = process::Options {
        output: Output::Separate,
        cap: READ_CAP,
        timeout: Some(READ_TIMEOUT),
        ..process::Options::new(&never)
    };
    let done = process::run(cmd, &opts).map_err(|e| anyhow::anyhow!("failed to run bash: {e}"))?;
    if done.timed_out {
        anyhow::bail!("sourcing it took longer than {} s: fix the file", READ_TIMEOUT.as_secs());
    }
    if done.escaped {
        anyhow::bail!("it started a process that left its process group and kept running: fix the file");
    }
    if !done.status.success() {
        let msg = String::from_utf8_lossy(&done.stderr);
        match msg.lines().find(|l| !l.trim().is_empty()) {
            Some(first) => anyhow::bail!("bash could not read it: {}", first.trim()),
            None => anyhow::bail!(
                "it exited (status {}) before PACKAGE_NAME and PACKAGE_VERSION could be read; dkms sources it, \
                 so it must not call `exit`: fix the file",
                done.code().map_or_else(|| "killed".to_owned(), |c| c.to_string())
            ),
        }
    }
    Ok((done.stdout, done.stderr))
}

/// Reads many dkms.conf files at once, like `read` on each. One bash reads all the files that
/// `nobody` can read (as `nobody` when we are root), each in its own subshell (one process start
/// instead of one per module); a file whose result there is not clean — bash complained, a value
/// is missing or invalid — and every file `nobody` cannot read is read on its own, so every
/// result is exactly the one `read` gives.
pub fn read_many(paths: &[PathBuf], evaluate: Evaluate) -> Vec<Result<DkmsConf, String>> {
    let root = nix::unistd::geteuid().is_root();
    let nobody = if root { nix::unistd::User::from_name(READER_USER).ok().flatten() } else { None };
    let batched: Vec<usize> = (0..paths.len())
        .filter(|&i| !root || nobody.as_ref().is_some_and(|u| paths[i].is_file() && readable_by(&paths[i], u)))
        .collect();
    let mut results: Vec<Option<DkmsConf>> = vec![None; paths.len()];
    if batched.len() > 1 {
        let files: Vec<&Path> = batched.iter().map(|&i| paths[i].as_path()).collect();
        if let Some(clean) = read_batch(&files, nobody.as_ref()) {
            for (i, conf) in batched.into_iter().zip(clean) {
                results[i] = conf;
            }
        }
    }
    results.into_iter().zip(paths).map(|(clean, path)| clean.map_or_else(|| read(path, evaluate), Ok)).collect()
}

/// Sources each file in a subshell and prints its values followed by a record separator; before
/// each file a marker goes to stderr, so complaints can be told apart per file.
const BATCH_READER: &str = r#"
kernelver=""; arch="$(uname -m 2>/dev/null)"; dkms_tree=/var/lib/dkms; source_tree=/usr/src
kernel_source_dir=""; install_tree=/usr/lib/modules
for f; do
    printf '\036\n' >&2
    (
        cd -- "${f%/*}" 2>/dev/null || exit
        source -- "$f" >/dev/null </dev/null
        printf 'PACKAGE_NAME=%s\0PACKAGE_VERSION=%s\0' "$PACKAGE_NAME" "$PACKAGE_VERSION"
        printf 'BUILD_DEPENDS=%s\0' "${BUILD_DEPENDS[*]}"
    )
    printf '\036\0'
done
"#;

/// The batch, run as `user`: `Some` with each file's clean result (or `None` where it must be
/// read alone); `None` when the batch itself could not run (then every file is read alone).
fn read_batch(files: &[&Path], user: Option<&nix::unistd::User>) -> Option<Vec<Option<DkmsConf>>> {
    let (out, err) = run_script(BATCH_READER, files, Path::new("/"), user).ok()?;
    let records: Vec<&[u8]> = split_on(&out, b"\x1e\0");
    let complaints: Vec<&[u8]> = split_on(&err, b"\x1e\n");
    if records.len() != files.len() + 1 || complaints.len() != files.len() + 1 {
        return None;
    }
    let results = files
        .iter()
        .enumerate()
        .map(|(i, path)| {
            if !complaints[i + 1].iter().all(u8::is_ascii_whitespace) {
                return None;
            }
            let conf = parse_output(records[i]).ok()?;
            check_directory(path, &conf).ok()?;
            Some(conf)
        })
        .collect();
    Some(results)
}

/// Splits `bytes` at every `sep` (the pieces between, and the rest after the last).
fn split_on<'a>(bytes: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.windows(sep.len()).position(|w| w == sep) {
        pieces.push(&rest[..at]);
        rest = &rest[at + sep.len()..];
    }
    pieces.push(rest);
    pieces
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
    if !crate::targets::is_valid_name(value) {
        return Err(format!(
            "{key} {value:?} is not a valid name (letters, digits and . _ + ~ : @ - only, \
             starting with a letter, digit or _)"
        ));
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
    #[test]
    fn reading_many_at_once_gives_what_reading_each_gives() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Readable by everyone, so that as root the batch runs as nobody as it would in /usr/src.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut paths = Vec::new();
        for (name, text) in [
            ("good-1.0", "PACKAGE_NAME=good\nPACKAGE_VERSION=1.0\nBUILD_DEPENDS=(base)\necho noise\n"),
            ("syntax-1.0", "PACKAGE_NAME=syntax\nPACKAGE_VERSION=1.0\nif then fi\n"),
            ("quits-1.0", "exit 3\nPACKAGE_NAME=quits\n"),
            ("wrongdir-1.0", "PACKAGE_NAME=other\nPACKAGE_VERSION=2\n"),
            ("also-2", "PACKAGE_NAME=also\nPACKAGE_VERSION=2\necho oops >&2\n"),
        ] {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("dkms.conf"), text).unwrap();
            paths.push(d.join("dkms.conf"));
        }
        // The batch itself ran and took only the clean results.
        let files: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let nobody =
            if nix::unistd::geteuid().is_root() { nix::unistd::User::from_name(READER_USER).unwrap() } else { None };
        let batch = read_batch(&files, nobody.as_ref()).expect("the batch runs");
        let taken: Vec<bool> = batch.iter().map(Option::is_some).collect();
        assert_eq!(taken, [true, false, false, false, false]);
        let many = read_many(&paths, Evaluate::AsDkmsWould);
        let each: Vec<_> = paths.iter().map(|p| read(p, Evaluate::AsDkmsWould)).collect();
        assert_eq!(many, each);
        assert_eq!(many[0].as_ref().unwrap().build_depends, ["base"]);
        assert!(many[1].is_err() && many[2].is_err() && many[3].is_err());
        assert_eq!(many[4].as_ref().unwrap().name, "also");
    }
}
