//! What the pre-transaction guard built, kept for the install hook of the same transaction so
//! that it installs those builds instead of building again.
//!
//! Under `ROOT/var/lib/dkms-hook/prebuilt/`: one private dkms tree per build (`trees/NAME-VERSION-
//! KERNEL/`), the incoming packages' headers and sources while the guard runs (`incoming.*/`), and
//! `index.json`, which names the transaction (see `inventory::transaction_id`), the certificate the
//! modules were signed with, the toolchain they were built with (the versions of the compiler, C
//! library and binutils packages, see [`Toolchain`]) and, per build, the digest of the sources and
//! the headers package (name and version) it was made from. The install hook uses a build only
//! when all of these are still what the system has; whatever it does not use goes when it is done.
//!
//! Before dkms has made the root's signing key (its first build on a system), the guard's builds
//! sign with a key dkms makes for them, kept here as `mok.key`/`mok.pub`; the install hook adopts
//! it as the root's key (what dkms would have made at that point anyway) when the root still has
//! none, and the builds signed with it are then the root's own.
//!
//! A run that belongs to another transaction (an aborted one, or `sync` later) drops the whole
//! directory as soon as it holds the lock: nothing of an aborted transaction's guard outlives the
//! next run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::domain::{Layout, Signing};

/// One build the guard made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prebuilt {
    pub module: String,
    pub version: String,
    pub kernel: String,
    /// The digest of the sources it was made from (see `inventory::digest`).
    pub digest: String,
    /// The headers package it was built against.
    pub headers_package: String,
    /// That package's version.
    pub headers_version: String,
    /// `TREE/NAME/VERSION/KERNEL`: what moves into the real dkms tree.
    pub dir: PathBuf,
}

/// `index.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The transaction the builds were made for.
    pub transaction: Option<String>,
    /// The SHA-256 of the certificate the modules were signed with; `None`: nothing was signed.
    pub certificate: Option<String>,
    /// The toolchain the builds were made with. An index without one (written by an older
    /// dkms-hook) matches no toolchain: its builds are made again.
    #[serde(default)]
    pub toolchain: Toolchain,
    pub builds: Vec<Prebuilt>,
}

/// The identity of the toolchain modules are built with: the installed versions of its packages
/// (`gcc`, `glibc`, `binutils`, …), by name. A package of the toolchain that is not installed is
/// not in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Toolchain(pub BTreeMap<String, String>);

impl Toolchain {
    /// How the packages `names` (and those of `before`) went from `before` to `self`, as
    /// `gcc 14.1-1 → 14.2-1, glibc (none) → 2.41-1`; `None` when they are the same.
    pub fn changes_from(&self, before: &Toolchain, names: &[&str]) -> Option<String> {
        let mut all: Vec<&str> = names.to_vec();
        all.extend(before.0.keys().map(String::as_str));
        all.sort_unstable();
        all.dedup();
        let changes: Vec<String> = all
            .into_iter()
            .filter_map(|name| {
                let (old, new) = (before.0.get(name), self.0.get(name));
                let shown = |v: Option<&String>| v.map_or("(none)".to_owned(), String::clone);
                (old != new).then(|| format!("{name} {} → {}", shown(old), shown(new)))
            })
            .collect();
        (!changes.is_empty()).then(|| changes.join(", "))
    }
}

/// The private dkms tree of the guard's build of `module/version` for `kernel`.
pub fn tree(layout: &Layout, module: &str, version: &str, kernel: &str) -> PathBuf {
    layout.prebuilt_dir().join("trees").join(format!("{module}-{version}-{kernel}"))
}

fn index_file(layout: &Layout) -> PathBuf {
    layout.prebuilt_dir().join("index.json")
}

/// Records the builds of `transaction`.
pub fn save(layout: &Layout, index: &Index) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(index).context("failed to write the guard's index")?;
    text.push(b'\n');
    crate::atomic::write(&index_file(layout), &text)
}

/// The index, if there is a readable one.
fn read_index(layout: &Layout) -> Option<Index> {
    let text = std::fs::read(index_file(layout)).ok()?;
    serde_json::from_slice::<Index>(&text)
        .map_err(|e| log::warn!("{} is damaged ({e}): its builds are not used", index_file(layout).display()))
        .ok()
}

/// The guard's builds for `transaction`; none when there are none, they belong to another, or
/// they were signed with another certificate than the root's. `toolchain` reads the toolchain the
/// system has now (only asked for when there are builds) and says which of its packages count:
/// builds made with another one are refused, and the reason is returned with them.
pub fn load(
    layout: &Layout,
    transaction: impl FnOnce() -> Option<String>,
    toolchain: impl FnOnce() -> (Toolchain, Vec<&'static str>),
) -> (Vec<Prebuilt>, Option<String>) {
    // The transaction is asked for (a walk through /proc) only when there are builds to match.
    let Some(index) = read_index(layout).filter(|i| !i.builds.is_empty()) else { return (Vec::new(), None) };
    let transaction = transaction();
    if transaction.is_none() || index.transaction != transaction {
        return (Vec::new(), None);
    }
    if let Some(certificate) = &index.certificate {
        let own = crate::digest::of_file(&Signing::of(layout).cert).ok();
        if own.as_ref() != Some(certificate) {
            log::info!("the guard's builds were signed with another key than the root's: building again");
            return (Vec::new(), None);
        }
    }
    let (now, names) = toolchain();
    if let Some(changes) = now.changes_from(&index.toolchain, &names) {
        return (Vec::new(), Some(format!("built again: the toolchain changed in the transaction ({changes})")));
    }
    (index.builds, None)
}

/// The key the guard's builds are signed with when the root has none yet: dkms makes it here, and
/// the install hook adopts it.
pub fn temporary_key(layout: &Layout) -> Signing {
    Signing { key: layout.prebuilt_dir().join("mok.key"), cert: layout.prebuilt_dir().join("mok.pub") }
}

/// Makes the key the guard's builds were signed with the root's own, when the root has none
/// (call with the lock held, before reading what the guard built).
pub fn adopt_key(layout: &Layout) {
    let (kept, own) = (temporary_key(layout), Signing::of(layout));
    if own.key.exists() || own.cert.exists() || !kept.exists() {
        return;
    }
    match copy_key(&kept, &own) {
        Ok(()) => log::info!("dkms's signing key is now the one the guard's builds were signed with"),
        Err(e) => {
            log::warn!("{e:#}: the guard's builds are built again");
            let _ = std::fs::remove_file(&own.key);
            let _ = std::fs::remove_file(&own.cert);
        }
    }
}

/// Copies a key (readable by root only) and its certificate.
fn copy_key(from: &Signing, to: &Signing) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    for (src, dst, mode) in [(&from.key, &to.key, 0o600), (&from.cert, &to.cert, 0o644)] {
        if let Some(dir) = dst.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        }
        let bytes = std::fs::read(src).with_context(|| format!("failed to read {}", src.display()))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(dst)
            .with_context(|| format!("failed to create {}", dst.display()))?;
        std::io::Write::write_all(&mut file, &bytes).with_context(|| format!("failed to write {}", dst.display()))?;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The guard's one write, at the end of its run: keeps the builds of `index` (and the key dkms
/// made for them, already in place) for the install hook; with no build to hand over, drops
/// everything. Returns how many builds the install hook can use. A write that fails leaves no
/// index: the install hook builds again, and the next run of another transaction clears the
/// builds.
pub fn hand_over(layout: &Layout, index: Option<&Index>) -> usize {
    let Some(index) = index.filter(|i| !i.builds.is_empty()) else {
        clear(layout);
        return 0;
    };
    match save(layout, index) {
        Ok(()) => index.builds.len(),
        Err(e) => {
            log::warn!("{e:#}: the install hook builds again");
            0
        }
    }
}

/// Drops everything the guard kept (call with the lock held).
pub fn clear(layout: &Layout) {
    let dir = layout.prebuilt_dir();
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("failed to remove {}: {e}", dir.display());
        }
    }
}

/// Drops what the guard kept for another transaction than `transaction` (call with the lock
/// held).
pub fn clear_other_transactions(layout: &Layout, transaction: impl FnOnce() -> Option<String>) {
    let ours = || {
        let index = read_index(layout);
        index.is_some_and(|i| i.transaction.is_some() && i.transaction == transaction())
    };
    if layout.prebuilt_dir().exists() && !ours() {
        clear(layout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard's build of hello 1.0 for k1.
    fn hello_build(layout: &Layout) -> Prebuilt {
        Prebuilt {
            module: "hello".into(),
            version: "1.0".into(),
            kernel: "k1".into(),
            digest: "d".into(),
            headers_package: "linux-headers".into(),
            headers_version: "6.12-1".into(),
            dir: tree(layout, "hello", "1.0", "k1").join("hello/1.0/k1"),
        }
    }

    #[test]
    fn builds_are_for_their_transaction_only() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let build = hello_build(&layout);
        let toolchain = Toolchain([("gcc".to_owned(), "14.1-1".to_owned())].into());
        let index = Index {
            transaction: Some("42.7".into()),
            certificate: None,
            toolchain: toolchain.clone(),
            builds: vec![build.clone()],
        };
        save(&layout, &index).unwrap();
        let same = || (toolchain.clone(), vec!["gcc", "glibc"]);
        assert_eq!(load(&layout, || Some("42.7".into()), same), (vec![build.clone()], None));
        assert_eq!(load(&layout, || Some("43.1".into()), same), (vec![], None));
        assert_eq!(load(&layout, || None, same), (vec![], None));
        assert!(build.dir.starts_with(layout.prebuilt_dir()));
        clear_other_transactions(&layout, || Some("42.7".into()));
        assert!(layout.prebuilt_dir().exists());
        clear_other_transactions(&layout, || Some("43.1".into()));
        assert!(!layout.prebuilt_dir().exists());
    }

    #[test]
    fn builds_made_with_another_toolchain_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let versions =
            |list: &[(&str, &str)]| Toolchain(list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect());
        let before = versions(&[("gcc", "14.1-1"), ("glibc", "2.40-1")]);
        let build = hello_build(&layout);
        let index = Index {
            transaction: Some("7.1".into()),
            certificate: None,
            toolchain: before.clone(),
            builds: vec![build],
        };
        save(&layout, &index).unwrap();
        let names = vec!["gcc", "glibc", "binutils"];
        let now = versions(&[("gcc", "14.2-1"), ("glibc", "2.40-1")]);
        let (builds, why) = load(&layout, || Some("7.1".into()), || (now.clone(), names.clone()));
        assert!(builds.is_empty());
        assert_eq!(why.as_deref(), Some("built again: the toolchain changed in the transaction (gcc 14.1-1 → 14.2-1)"));
        // A package of the toolchain that arrives counts; one that is not a part of it does not.
        let now = versions(&[("gcc", "14.1-1"), ("glibc", "2.40-1"), ("binutils", "2.43-1"), ("clang", "19-1")]);
        assert_eq!(now.changes_from(&before, &names).as_deref(), Some("binutils (none) → 2.43-1"));
        // An index of an older dkms-hook has no toolchain: its builds are not used.
        assert!(before.changes_from(&Toolchain::default(), &names).is_some());
        assert_eq!(before.changes_from(&before, &names), None);
    }
}
