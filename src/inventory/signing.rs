//! How the system acted on signs the modules dkms builds, read the way dkms ≥ 3.3 reads it, once
//! per run and where dkms-hook itself runs: the signing variables of `/etc/dkms/framework.conf`
//! and `framework.conf.d/*.conf` (shell, sourced one by one; a value set there wins over the
//! environment, as in dkms's `read_framework_conf`), dkms's chroot test (`running_in_chroot`),
//! and per kernel the hash `CONFIG_MODULE_SIG_HASH` of its headers' `.config`.
//!
//! dkms-hook's builds for an incoming kernel run in a private mount namespace, which dkms ≥ 3.3
//! takes for a chroot: the decision made here is what makes those builds come out as a direct
//! `dkms install` would (see `run::build`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::domain::{Layout, SignPolicy, Signing};
use crate::interrupt::Stop;
use crate::process::{self, Output};

/// The magic string the kernel's `sign-file` appends to a signed module.
const SIGNATURE_MAGIC: &[u8] = b"~Module signature appended~\n";

/// The signing variables dkms accepts from framework.conf.
const VARIABLES: [&str; 4] = ["try_sign_modules", "mok_signing_key", "mok_certificate", "sign_file"];

/// How the system signs modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemSigning {
    /// Whether a direct `dkms install` here signs.
    pub policy: SignPolicy,
    /// The key and certificate framework.conf names, when it names both (they win over the
    /// paths dkms-hook passes in the environment).
    pub key: Option<Signing>,
    /// framework.conf's `sign_file`, if set.
    pub sign_file: Option<PathBuf>,
}

impl SystemSigning {
    /// Reads the root's framework files and makes dkms's chroot test here.
    pub fn read(layout: &Layout) -> SystemSigning {
        let values = framework_values(&layout.root);
        let get = |name: &str| values.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let try_sign = get("try_sign_modules").or_else(|| std::env::var("try_sign_modules").ok());
        let policy = SignPolicy::decide(try_sign.as_deref(), in_chroot());
        let key = match (get("mok_signing_key"), get("mok_certificate")) {
            (Some(key), Some(cert)) if !key.is_empty() && !cert.is_empty() => {
                Some(Signing { key: key.into(), cert: cert.into() })
            }
            _ => None,
        };
        let sign_file = get("sign_file").filter(|s| !s.is_empty()).map(PathBuf::from);
        SystemSigning { policy, key, sign_file }
    }

    /// The key dkms signs with: framework.conf's, else `default` (what dkms-hook passes it).
    pub fn key_or<'a>(&'a self, default: &'a Signing) -> &'a Signing {
        self.key.as_ref().unwrap_or(default)
    }

    /// The `sign-file` program for a kernel whose headers are `headers`.
    pub fn sign_file_for(&self, headers: &Path) -> PathBuf {
        self.sign_file.clone().unwrap_or_else(|| headers.join("scripts/sign-file"))
    }
}

/// The signing variables the root's framework files set, in dkms's order (framework.conf, then
/// framework.conf.d/*.conf; a later file wins). A file bash cannot source sets nothing.
fn framework_values(root: &Path) -> Vec<(String, String)> {
    let dir = root.join("etc/dkms");
    let mut files = vec![dir.join("framework.conf")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(dir.join("framework.conf.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    more.sort();
    files.extend(more);
    let files: Vec<PathBuf> = files.into_iter().filter(|f| f.is_file()).collect();
    if files.is_empty() {
        return Vec::new();
    }
    // Each file in a subshell of its own, as dkms's safe_source does; a variable it leaves unset
    // is not printed, so an earlier file's value stands.
    let script = format!(
        r#"for f; do ( . "$f" >/dev/null 2>&1 || exit 0; for v in {}; do [[ -v $v ]] && printf '%s=%s\0' "$v" "${{!v}}"; done ); done"#,
        VARIABLES.join(" ")
    );
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c", &script, "dkms-hook"])
        .args(&files)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C");
    let never = Stop::new();
    let opts = process::Options {
        output: Output::Separate,
        cap: 1 << 16,
        timeout: Some(Duration::from_secs(10)),
        ..process::Options::new(&never)
    };
    let Ok(done) = process::run(cmd, &opts) else {
        log::warn!("failed to run bash to read {}: signing follows the defaults", files[0].display());
        return Vec::new();
    };
    parse(&done.stdout)
}

/// `NAME=value\0…` into pairs, the last value of a name winning.
fn parse(output: &[u8]) -> Vec<(String, String)> {
    let mut values: Vec<(String, String)> = Vec::new();
    for item in output.split(|b| *b == 0).filter(|i| !i.is_empty()) {
        let item = String::from_utf8_lossy(item);
        if let Some((name, value)) = item.split_once('=') {
            values.retain(|(k, _)| k != name);
            values.push((name.to_owned(), value.to_owned()));
        }
    }
    values
}

/// dkms's `running_in_chroot`, made in this process: our mounts differ from PID 1's, or (as
/// root) our `/` is not PID 1's root; without root dkms assumes a chroot.
pub fn in_chroot() -> bool {
    if let (Ok(init), Ok(ours)) = (std::fs::read("/proc/1/mountinfo"), std::fs::read("/proc/self/mountinfo")) {
        if init != ours {
            return true;
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return true;
    }
    match (std::fs::metadata("/"), std::fs::metadata("/proc/1/root")) {
        (Ok(ours), Ok(init)) => (ours.dev(), ours.ino()) != (init.dev(), init.ino()),
        _ => false,
    }
}

/// The hash a kernel signs modules with (`CONFIG_MODULE_SIG_HASH` in its headers'
/// `include/config/auto.conf`, else `.config`, as dkms reads it); `None` when it has no module
/// signing (dkms then signs nothing).
pub fn kernel_hash(headers: &Path) -> Option<String> {
    let auto = headers.join("include/config/auto.conf");
    let file = if auto.exists() { auto } else { headers.join(".config") };
    hash_of(&std::fs::read_to_string(file).ok()?)
}

fn hash_of(config: &str) -> Option<String> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_MODULE_SIG_HASH="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// A module file's bytes, decompressed.
pub fn module_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tool = if name.ends_with(".ko.zst") {
        Some("zstd")
    } else if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    let bytes = match tool {
        None => std::fs::read(path).map_err(|e| e.to_string())?,
        Some(tool) => {
            let mut cmd = Command::new(tool);
            cmd.args(["-dc", "--"]).arg(path);
            let never = Stop::new();
            let opts = process::Options { output: Output::Separate, ..process::Options::new(&never) };
            let done = process::run(cmd, &opts).map_err(|e| format!("failed to run {tool}: {e}"))?;
            if !done.status.success() {
                return Err(format!("{tool} could not decompress it"));
            }
            done.stdout
        }
    };
    Ok(bytes)
}

/// Who signed an installed module (for a build of several modules: the least trusted of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signature {
    /// No signature.
    Unsigned,
    /// Signed with another key than the one dkms signs with on this system.
    OtherKey,
    /// Signed with the key dkms signs with on this system.
    SystemKey,
}

/// Who signed the modules of each build dkms has installed for one of `kernels`, against
/// `certificate` (the one dkms signs with here), by (module, version, kernel); builds whose
/// module files cannot be read are left out.
pub fn installed_signatures(
    layout: &Layout,
    tree: &super::dkms_tree::DkmsTree,
    kernels: impl Fn(&str) -> bool,
    certificate: &[u8],
) -> BTreeMap<(String, String, String), Signature> {
    let mut signatures = BTreeMap::new();
    for ((m, v), entry) in &tree.entries {
        for kver in entry.installed.iter().filter(|k| kernels(k)) {
            let mut worst = None;
            for path in super::dkms_tree::built_modules(&layout.dkms_tree, m, v, kver) {
                let Ok(bytes) = module_bytes(&path) else { continue };
                let this = match signed_with(&bytes, certificate) {
                    None => Signature::Unsigned,
                    Some(false) => Signature::OtherKey,
                    Some(true) => Signature::SystemKey,
                };
                worst = Some(worst.map_or(this, |w: Signature| w.min(this)));
            }
            if let Some(worst) = worst {
                signatures.insert((m.clone(), v.clone(), kver.clone()), worst);
            }
        }
    }
    signatures
}

/// The installed builds that a direct `dkms install` here would have signed with the system's
/// key and that are not (unsigned, or signed with another key), by (module, version, kernel):
/// none when the system does not sign; only for kernels that sign modules.
pub fn not_signed_as_the_system_signs(
    layout: &Layout,
    tree: &super::dkms_tree::DkmsTree,
    kernels: &[&str],
) -> BTreeSet<(String, String, String)> {
    let system = SystemSigning::read(layout);
    if !system.policy.signs() {
        return BTreeSet::new();
    }
    let own = Signing::of(layout);
    let certificate = std::fs::read(&system.key_or(&own).cert).unwrap_or_default();
    let signing: Vec<&str> =
        kernels.iter().copied().filter(|k| kernel_hash(&layout.kernel_dir(k).join("build")).is_some()).collect();
    installed_signatures(layout, tree, |k| signing.contains(&k), &certificate)
        .into_iter()
        .filter(|(_, s)| *s != Signature::SystemKey)
        .map(|(key, _)| key)
        .collect()
}

/// Whether a module file carries a signature; `None` when that cannot be told from the file
/// (compressed) or it cannot be read.
pub fn is_signed(module: &Path) -> Option<bool> {
    if module.extension().is_none_or(|e| e != "ko") {
        return None;
    }
    let bytes = std::fs::read(module).ok()?;
    Some(has_signature(&bytes))
}

/// Whether a module's (decompressed) bytes end in a signature.
pub fn has_signature(bytes: &[u8]) -> bool {
    bytes.ends_with(SIGNATURE_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_values_win() {
        let out = b"try_sign_modules=true\0sign_file=/x\0try_sign_modules=false\0";
        assert_eq!(
            parse(out),
            [("sign_file".to_owned(), "/x".to_owned()), ("try_sign_modules".to_owned(), "false".to_owned())]
        );
    }

    #[test]
    fn framework_files_are_sourced_in_dkms_order() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("etc/dkms/framework.conf.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(root.path().join("etc/dkms/framework.conf"), "try_sign_modules=\"true\"\nsign_file=/s\n")
            .unwrap();
        std::fs::write(dir.join("10-off.conf"), "x=1; try_sign_modules=false\n").unwrap();
        std::fs::write(dir.join("20-broken.conf"), "try_sign_modules=true; exit 3\n").unwrap();
        std::fs::write(dir.join("30-ignored.txt"), "try_sign_modules=true\n").unwrap();
        let values = framework_values(root.path());
        assert!(values.contains(&("try_sign_modules".into(), "false".into())), "{values:?}");
        assert!(values.contains(&("sign_file".into(), "/s".into())), "{values:?}");
    }

    #[test]
    fn kernel_hash_from_config() {
        assert_eq!(hash_of("CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_HASH=\"sha512\"\n").as_deref(), Some("sha512"));
        assert_eq!(hash_of("# CONFIG_MODULE_SIG is not set\n"), None);
    }
}

/// Who signed a module (its decompressed bytes): `None` unsigned, `Some(true)` the holder of
/// `certificate` (DER, as dkms makes `mok.pub`), `Some(false)` another key. A PKCS#7 module
/// signature names its signer by the certificate's issuer and serial number, DER-encoded as in
/// the certificate itself; a certificate that is not DER is looked for by its first line.
pub fn signed_with(module: &[u8], certificate: &[u8]) -> Option<bool> {
    let body = module.strip_suffix(SIGNATURE_MAGIC)?;
    // struct module_signature: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len (BE).
    let block = match body.len().checked_sub(12).map(|at| &body[at..]) {
        Some(info) => {
            let len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]) as usize;
            let end = body.len() - 12;
            end.checked_sub(len).map_or(body, |start| &body[start..end])
        }
        None => body,
    };
    let marks = certificate_marks(certificate);
    Some(!marks.is_empty() && marks.iter().all(|m| contains(block, m)))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// What names a certificate in a signature: the DER issuer and serial number, or (not DER) its
/// first line.
fn certificate_marks(cert: &[u8]) -> Vec<Vec<u8>> {
    if let Some(marks) = issuer_and_serial(cert) {
        return marks;
    }
    let line = cert.split(|b| *b == b'\n').next().unwrap_or_default();
    if line.is_empty() {
        Vec::new()
    } else {
        vec![line.to_vec()]
    }
}

/// One DER element at the start of `der`: (the whole element, its contents, the rest).
fn tlv(der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let short = *der.get(1)?;
    let (len, header) = if short < 0x80 {
        (short as usize, 2)
    } else {
        let n = (short & 0x7f) as usize;
        let bytes = der.get(2..2 + n).filter(|_| (1..=4).contains(&n))?;
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), 2 + n)
    };
    let end = header.checked_add(len)?;
    (der.len() >= end).then(|| (&der[..end], &der[header..end], &der[end..]))
}

/// The DER issuer Name and serialNumber of an X.509 certificate.
fn issuer_and_serial(cert: &[u8]) -> Option<Vec<Vec<u8>>> {
    if cert.first() != Some(&0x30) {
        return None;
    }
    let (_, certificate, _) = tlv(cert)?;
    let (_, tbs, _) = tlv(certificate)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    let (serial, _, rest) = tlv(rest)?;
    let (_, _, rest) = tlv(rest)?; // signature algorithm
    let (issuer, _, _) = tlv(rest)?;
    (serial.first() == Some(&0x02) && issuer.first() == Some(&0x30)).then(|| vec![issuer.to_vec(), serial.to_vec()])
}

/// Why the running kernel refuses unsigned modules: the lockdown mode
/// (`/sys/kernel/security/lockdown`, e.g. `none [integrity] confidentiality`) or
/// `module.sig_enforce`; `None` when it loads them.
pub fn enforcement() -> Option<String> {
    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default();
    let enforce = std::fs::read_to_string("/sys/module/module/parameters/sig_enforce").unwrap_or_default();
    enforced_by(&lockdown, &enforce)
}

fn enforced_by(lockdown: &str, sig_enforce: &str) -> Option<String> {
    let mode = lockdown.split_whitespace().find_map(|w| w.strip_prefix('[')?.strip_suffix(']'));
    match mode {
        Some(mode) if mode != "none" => Some(format!("lockdown ({mode})")),
        _ if sig_enforce.trim() == "Y" => Some("module.sig_enforce".to_owned()),
        _ => None,
    }
}

/// Whether the kernel holds `certificate` (DER) among its asymmetric keys (`/proc/keys`, which
/// lists the keys of `.builtin_trusted_keys`, `.secondary_trusted_keys`, `.machine` and
/// `.platform` to root): the kernel names an X.509 key by its subject key identifier (or serial
/// number) in hex. `None` when the certificate cannot be read.
pub fn kernel_trusts(certificate: &[u8]) -> Option<bool> {
    let keys = std::fs::read_to_string("/proc/keys").unwrap_or_default();
    trusted_in(&keys, certificate)
}

fn trusted_in(proc_keys: &str, certificate: &[u8]) -> Option<bool> {
    let id = key_id(certificate)?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Some(proc_keys.lines().any(|l| l.contains(" asymmetric ") && l.contains(&format!(": {hex}"))))
}

/// The id the kernel names an X.509 key by: the subject key identifier extension's value, else
/// the serial number's contents.
fn key_id(cert: &[u8]) -> Option<Vec<u8>> {
    // Extension { OID 2.5.29.14, OCTET STRING { OCTET STRING skid } }
    const SKID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x0e];
    if let Some(at) = cert.windows(SKID.len()).position(|w| w == SKID) {
        let (_, outer, _) = tlv(&cert[at + SKID.len()..])?;
        let (_, skid, _) = tlv(outer)?;
        return Some(skid.to_vec());
    }
    let marks = issuer_and_serial(cert)?;
    tlv(&marks[1]).map(|(_, serial, _)| serial.to_vec())
}

#[cfg(test)]
mod signer_tests {
    use super::*;

    #[test]
    fn a_signature_names_its_certificate() {
        // A certificate's start: SEQUENCE { SEQUENCE { [0] v3, INTEGER 0x1234, SEQUENCE {}, issuer } }.
        let issuer = [0x30, 0x03, 0x31, 0x01, 0x41];
        let mut tbs = vec![0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x02, 0x12, 0x34, 0x30, 0x00];
        tbs.extend(issuer);
        let mut inner = vec![0x30, tbs.len() as u8];
        inner.extend(&tbs);
        let mut cert = vec![0x30, inner.len() as u8];
        cert.extend(&inner);
        let mut blob = b"pkcs7...".to_vec();
        blob.extend(issuer);
        blob.extend([0x02, 0x02, 0x12, 0x34]);
        let mut module = b"\x7fELF module".to_vec();
        module.extend(&blob);
        module.extend([0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, blob.len() as u8]);
        module.extend(SIGNATURE_MAGIC);
        assert_eq!(signed_with(&module, &cert), Some(true));
        let mut other = cert.clone();
        let last = other.len() - 1;
        other[last] = 0x42;
        assert_eq!(signed_with(&module, &other), Some(false));
        assert_eq!(signed_with(b"\x7fELF module", &cert), None);
        assert_eq!(signed_with(b"x\nfake signature by cert 1\n~Module signature appended~\n", b"cert 1\n"), Some(true));
    }

    #[test]
    fn enforcement_and_trusted_keys() {
        assert_eq!(enforced_by("[none] integrity confidentiality\n", "N\n"), None);
        assert_eq!(enforced_by("none [integrity] confidentiality\n", "N\n").as_deref(), Some("lockdown (integrity)"));
        assert_eq!(enforced_by("", "Y\n").as_deref(), Some("module.sig_enforce"));
        // A certificate's subject key identifier extension, as openssl writes it.
        let mut cert = vec![0x30, 0x00];
        cert.extend([0x06, 0x03, 0x55, 0x1d, 0x0e, 0x04, 0x04, 0x04, 0x02, 0x99, 0x92]);
        let keys = "1f2e3d4c I------     1 perm 1f030000     0     0 asymmetric DKMS module signing key: 9992 X509.rsa 9992 []\n";
        assert_eq!(trusted_in(keys, &cert), Some(true));
        assert_eq!(trusted_in("2a I-- 1 perm 1f0 0 0 keyring .machine: 1\n", &cert), Some(false));
    }
}
