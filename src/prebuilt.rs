//! What the pre-transaction guard built, kept for the install hook of the same transaction so
//! that it installs those builds instead of building again.
//!
//! Under `ROOT/var/lib/dkms-hook/prebuilt/`: one private dkms tree per build (`trees/NAME-VERSION-
//! KERNEL/`), the incoming packages' headers and sources while the guard runs (`incoming.*/`), and
//! `index.json`, which names the transaction (see `inventory::incoming`) and, per build, the
//! digest of the sources and the headers package (name and version) it was made from.
//! The install hook uses a build only when all of these are still what the system has; whatever
//! it does not use goes when it is done. A run that belongs to another transaction (an aborted
//! one, or `sync` later) drops the whole directory as soon as it holds the lock: nothing of an
//! aborted transaction's guard outlives the next run.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Layout;

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
    pub builds: Vec<Prebuilt>,
}

/// `ROOT/var/lib/dkms-hook/prebuilt`.
pub fn root(layout: &Layout) -> PathBuf {
    layout.own_dir().join("prebuilt")
}

/// The private dkms tree of the guard's build of `module/version` for `kernel`.
pub fn tree(layout: &Layout, module: &str, version: &str, kernel: &str) -> PathBuf {
    root(layout).join("trees").join(format!("{module}-{version}-{kernel}"))
}

fn index_file(layout: &Layout) -> PathBuf {
    root(layout).join("index.json")
}

/// Records the builds of `transaction`.
pub fn save(layout: &Layout, index: &Index) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(index).context("failed to write the guard's index")?;
    text.push(b'\n');
    crate::state::write_atomically(&index_file(layout), &text)
}

/// The guard's builds for `transaction`; none when there are none or they belong to another.
pub fn load(layout: &Layout, transaction: Option<&str>) -> Vec<Prebuilt> {
    let Ok(text) = std::fs::read(index_file(layout)) else { return Vec::new() };
    match serde_json::from_slice::<Index>(&text) {
        Ok(index) if transaction.is_some() && index.transaction.as_deref() == transaction => index.builds,
        Ok(_) => Vec::new(),
        Err(e) => {
            log::warn!("{} is damaged ({e}): its builds are not used", index_file(layout).display());
            Vec::new()
        }
    }
}

/// Drops everything the guard kept (call with the lock held).
pub fn clear(layout: &Layout) {
    let dir = root(layout);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("failed to remove {}: {e}", dir.display());
        }
    }
}

/// Drops what the guard kept for another transaction than `transaction` (call with the lock
/// held).
pub fn clear_other_transactions(layout: &Layout, transaction: Option<&str>) {
    if root(layout).exists() && load(layout, transaction).is_empty() {
        clear(layout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_for_their_transaction_only() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let build = Prebuilt {
            module: "hello".into(),
            version: "1.0".into(),
            kernel: "k1".into(),
            digest: "d".into(),
            headers_package: "linux-headers".into(),
            headers_version: "6.12-1".into(),
            dir: tree(&layout, "hello", "1.0", "k1").join("hello/1.0/k1"),
        };
        save(&layout, &Index { transaction: Some("42.7".into()), builds: vec![build.clone()] }).unwrap();
        assert_eq!(load(&layout, Some("42.7")), std::slice::from_ref(&build));
        assert!(load(&layout, Some("43.1")).is_empty() && load(&layout, None).is_empty());
        assert!(build.dir.starts_with(root(&layout)));
        clear_other_transactions(&layout, Some("42.7"));
        assert!(root(&layout).exists());
        clear_other_transactions(&layout, Some("43.1"));
        assert!(!root(&layout).exists());
    }
}
