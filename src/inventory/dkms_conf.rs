//! The values dkms-hook needs from a module's dkms.conf: PACKAGE_NAME, PACKAGE_VERSION and
//! BUILD_DEPENDS for every command; the module records, MAKE and the deprecated options it sets
//! for `lint`.
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DkmsConf {
    /// PACKAGE_NAME.
    pub name: String,
    /// PACKAGE_VERSION.
    pub version: String,
    /// BUILD_DEPENDS: module names that must be installed for a kernel before this one builds.
    pub build_depends: Vec<String>,
    /// BUILT_MODULE_NAME of each module record, as dkms counts records (one more than the highest
    /// index set in BUILT_MODULE_NAME, BUILT_MODULE_LOCATION, DEST_MODULE_NAME or
    /// DEST_MODULE_LOCATION); empty where the record leaves it unset.
    pub built_module_names: Vec<String>,
    /// DEST_MODULE_LOCATION of each module record; empty where unset.
    pub dest_module_locations: Vec<String>,
    /// MAKE, every index that is set, in index order.
    pub make: Vec<String>,
    /// The options the file sets that dkms 3 reports as deprecated and ignores or maps to
    /// something else (`REMAKE_INITRD`, `MODULES_CONF…`, `OBSOLETE_BY`, and `CLEAN` unless it is
    /// `true`), in dkms's order.
    pub deprecated: Vec<String>,
}

impl DkmsConf {
    /// The directory dkms looks for this module version's source in: `NAME-VERSION`.
    pub fn source_dir(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// dkms's own variables, set before a dkms.conf is sourced so that one that uses them (or
/// `set -u`) reads as it would under dkms.
macro_rules! reader_prelude {
    () => {
        r#"
kernelver=""; arch="$(uname -m 2>/dev/null)"; dkms_tree=/var/lib/dkms; source_tree=/usr/src
kernel_source_dir=""; install_tree=/usr/lib/modules
"#
    };
}

/// Prints the values of the dkms.conf just sourced as NUL-terminated `KEY=value` records, the
/// same for both readers. The module records are counted as dkms counts them; the deprecated
/// options are the ones dkms 3.4 warns about when it reads the file (`safe_source` in dkms.in).
/// The file's own `set -eu` ends here: it must not stop the printing.
macro_rules! reader_print {
    () => {
        r#"
set +eu
printf 'PACKAGE_NAME=%s\0PACKAGE_VERSION=%s\0' "$PACKAGE_NAME" "$PACKAGE_VERSION"
printf 'BUILD_DEPENDS=%s\0' "${BUILD_DEPENDS[*]}"
__dkms_hook_n=0
for __dkms_hook_i in "${!BUILT_MODULE_NAME[@]}" "${!BUILT_MODULE_LOCATION[@]}" "${!DEST_MODULE_NAME[@]}" \
    "${!DEST_MODULE_LOCATION[@]}"; do
    (( __dkms_hook_i >= __dkms_hook_n )) && __dkms_hook_n=$(( __dkms_hook_i + 1 ))
done
for (( __dkms_hook_i = 0; __dkms_hook_i < __dkms_hook_n; __dkms_hook_i++ )); do
    printf 'BUILT_MODULE_NAME=%s\0DEST_MODULE_LOCATION=%s\0' "${BUILT_MODULE_NAME[__dkms_hook_i]}" \
        "${DEST_MODULE_LOCATION[__dkms_hook_i]}"
done
for __dkms_hook_i in "${!MAKE[@]}"; do printf 'MAKE=%s\0' "${MAKE[__dkms_hook_i]}"; done
for __dkms_hook_v in REMAKE_INITRD MODULES_CONF MODULES_CONF_OBSOLETES MODULES_CONF_ALIAS_TYPE \
    MODULES_CONF_OBSOLETE_ONLY OBSOLETE_BY; do
    eval "(( \${#$__dkms_hook_v[@]} ))" && printf 'DEPRECATED=%s\0' "$__dkms_hook_v"
done
if (( ${#CLEAN[@]} )); then
    case $CLEAN in true|/bin/true|/usr/bin/true) ;; *) printf 'DEPRECATED=CLEAN\0' ;; esac
fi
"#
    };
}

/// Sources the file and prints the values; `$1` is the file.
const READER: &str = concat!(reader_prelude!(), r#"source -- "$1" >/dev/null </dev/null"#, reader_print!());

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
    let conf = read_values(path, evaluate)?;
    check_directory(path, &conf)?;
    Ok(conf)
}

/// Like [`read`], without checking that the file's directory is `NAME-VERSION`: for a caller
/// that reports that itself.
pub fn read_values(path: &Path, evaluate: Evaluate) -> Result<DkmsConf, String> {
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
    Ok(conf)
}

/// dkms finds a module's source at `SOURCETREE/NAME-VERSION`: a dkms.conf in any other
/// directory names a source dkms cannot find (or, worse, another package's).
fn check_directory(path: &Path, conf: &DkmsConf) -> Result<(), String> {
    let Some(dir) = path.parent().and_then(Path::file_name).and_then(|d| d.to_str()) else {
        return Ok(());
    };
    let expected = conf.source_dir();
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
    if paths.is_empty() {
        return Vec::new();
    }
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
const BATCH_READER: &str = concat!(
    reader_prelude!(),
    r#"
for f; do
    printf '\036\n' >&2
    (
        cd -- "${f%/*}" 2>/dev/null || exit
        source -- "$f" >/dev/null </dev/null
"#,
    reader_print!(),
    r#"
    )
    printf '\036\0'
done
"#
);

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
    let mut conf = DkmsConf::default();
    for record in output.split(|&b| b == 0) {
        let record = std::str::from_utf8(record).map_err(|_| "a value is not valid UTF-8".to_owned())?;
        let Some((key, v)) = record.split_once('=') else { continue };
        match key {
            "PACKAGE_NAME" => conf.name = v.to_owned(),
            "PACKAGE_VERSION" => conf.version = v.to_owned(),
            "BUILD_DEPENDS" => conf.build_depends = v.split_whitespace().map(str::to_owned).collect(),
            "BUILT_MODULE_NAME" => conf.built_module_names.push(v.to_owned()),
            "DEST_MODULE_LOCATION" => conf.dest_module_locations.push(v.to_owned()),
            "MAKE" => conf.make.push(v.to_owned()),
            "DEPRECATED" => conf.deprecated.push(v.to_owned()),
            _ => {}
        }
    }
    check_value("PACKAGE_NAME", &conf.name)?;
    check_value("PACKAGE_VERSION", &conf.version)?;
    for dep in &conf.build_depends {
        check_value("BUILD_DEPENDS", dep)?;
    }
    Ok(conf)
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
    fn parses_module_records_make_and_deprecated_options() {
        let c = parse_output(
            b"PACKAGE_NAME=a\0PACKAGE_VERSION=1\0BUILD_DEPENDS=\0BUILT_MODULE_NAME=a\0DEST_MODULE_LOCATION=/updates\0\
              BUILT_MODULE_NAME=\0DEST_MODULE_LOCATION=/extra\0MAKE=make KVER=\0MAKE=make -C x=y\0\
              DEPRECATED=REMAKE_INITRD\0DEPRECATED=CLEAN\0",
        )
        .unwrap();
        assert_eq!(c.built_module_names, ["a", ""]);
        assert_eq!(c.dest_module_locations, ["/updates", "/extra"]);
        assert_eq!(c.make, ["make KVER=", "make -C x=y"]);
        assert_eq!(c.deprecated, ["REMAKE_INITRD", "CLEAN"]);
        assert_eq!(c.source_dir(), "a-1");
    }

    /// Writes `text` as `DIR/NAME/dkms.conf` below `dir` (made readable by everyone, so that as
    /// root the reader runs as nobody, as it would in /usr/src).
    fn conf_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("dkms.conf"), text).unwrap();
        d.join("dkms.conf")
    }

    #[test]
    fn reads_records_as_dkms_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        for (text, names, locations, make, deprecated) in [
            // Sparse arrays: records up to the highest index of any of the four arrays.
            (
                "BUILT_MODULE_NAME[0]=a\nDEST_MODULE_LOCATION[0]=/updates/dkms\nDEST_MODULE_NAME[2]=c\n\
                 MAKE[0]=\"make KVER=$kernelver\"\nMAKE_MATCH[1]=x\nMAKE[1]='make -C /lib/modules/$(uname -r)/build'\n",
                &["a", "", ""][..],
                &["/updates/dkms", "", ""][..],
                &["make KVER=", "make -C /lib/modules/$(uname -r)/build"][..],
                &[][..],
            ),
            // A scalar is element 0; no records at all is none.
            ("BUILT_MODULE_NAME=a\n", &["a"], &[""], &[], &[]),
            ("MAKE=make\n", &[], &[], &["make"], &[]),
            // What dkms 3.4 warns about; CLEAN only when it runs something.
            (
                "REMAKE_INITRD=yes\nMODULES_CONF[0]=x\nMODULES_CONF_OBSOLETES[0]=y\nMODULES_CONF_ALIAS_TYPE[0]=z\n\
                 MODULES_CONF_OBSOLETE_ONLY=no\nOBSOLETE_BY=6.1\nCLEAN=\"make clean\"\n",
                &[],
                &[],
                &[],
                &[
                    "REMAKE_INITRD",
                    "MODULES_CONF",
                    "MODULES_CONF_OBSOLETES",
                    "MODULES_CONF_ALIAS_TYPE",
                    "MODULES_CONF_OBSOLETE_ONLY",
                    "OBSOLETE_BY",
                    "CLEAN",
                ][..],
            ),
            ("CLEAN=true\n", &[], &[], &[], &[]),
            ("CLEAN=/bin/true\nREMAKE_INITRD=\n", &[], &[], &[], &["REMAKE_INITRD"]),
            // `set -eu` in the file does not stop the printing of what it left unset.
            ("set -eu\nBUILT_MODULE_NAME[1]=b\n", &["", "b"], &["", ""], &[], &[]),
        ] {
            let text = format!("PACKAGE_NAME=m\nPACKAGE_VERSION=1\n{text}");
            let name = format!("m-1.{}", dir.path().read_dir().unwrap().count());
            let path = conf_file(dir.path(), &name, &text);
            let c = read_values(&path, Evaluate::Unprivileged).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(c.built_module_names, names, "{text}");
            assert_eq!(c.dest_module_locations, locations, "{text}");
            assert_eq!(c.make, make, "{text}");
            assert_eq!(c.deprecated, deprecated, "{text}");
        }
    }

    #[test]
    fn the_directory_is_checked_by_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = conf_file(dir.path(), "m-1.0", "PACKAGE_NAME=m\nPACKAGE_VERSION=1.1\n");
        assert_eq!(read_values(&path, Evaluate::Unprivileged).unwrap().source_dir(), "m-1.1");
        let err = read(&path, Evaluate::Unprivileged).unwrap_err();
        assert!(err.contains("dkms looks for that source in m-1.1, not m-1.0"), "{err}");
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
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (name, text) in [
            (
                "good-1.0",
                "PACKAGE_NAME=good\nPACKAGE_VERSION=1.0\nBUILD_DEPENDS=(base)\necho noise\nBUILT_MODULE_NAME[1]=g\n\
                 DEST_MODULE_LOCATION[0]=/extra\nMAKE[0]=make\nREMAKE_INITRD=no\nCLEAN='make clean'\n",
            ),
            ("syntax-1.0", "PACKAGE_NAME=syntax\nPACKAGE_VERSION=1.0\nif then fi\n"),
            ("quits-1.0", "exit 3\nPACKAGE_NAME=quits\n"),
            ("wrongdir-1.0", "PACKAGE_NAME=other\nPACKAGE_VERSION=2\n"),
            ("also-2", "PACKAGE_NAME=also\nPACKAGE_VERSION=2\necho oops >&2\n"),
        ] {
            paths.push(conf_file(dir.path(), name, text));
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
        let good = many[0].as_ref().unwrap();
        assert_eq!(good.build_depends, ["base"]);
        assert_eq!(good.built_module_names, ["", "g"]);
        assert_eq!(good.dest_module_locations, ["/extra", ""]);
        assert_eq!(good.make, ["make"]);
        assert_eq!(good.deprecated, ["REMAKE_INITRD", "CLEAN"]);
        assert!(many[1].is_err() && many[2].is_err() && many[3].is_err());
        assert_eq!(many[4].as_ref().unwrap().name, "also");
    }
}
