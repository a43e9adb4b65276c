//! What the guard saw coming in a transaction, for the remove hook of the same transaction (see
//! [`Coming`]): `ROOT/var/lib/dkms-hook/coming.json`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::domain::Layout;

/// What the guard saw coming in a transaction: the module source directories among its targets
/// (`usr/src/D/dkms.conf`, matched as installed or upgraded). The remove hook runs after it in the
/// same transaction and reads it to tell a module version whose directory leaves while another
/// directory of the module comes (kept until its replacement is built) from one that leaves for
/// good. Kept beside, not in, the prebuilt directory: it is written whether or not anything was
/// built, also with the guard off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coming {
    /// The transaction it was seen in.
    pub transaction: String,
    pub module_dirs: Vec<String>,
}

fn coming_file(layout: &Layout) -> PathBuf {
    layout.own_dir().join("coming.json")
}

/// Records the module source directories `transaction` brings (nothing without a transaction).
pub fn record(layout: &Layout, transaction: Option<&str>, module_dirs: &BTreeSet<String>) {
    let Some(transaction) = transaction else { return };
    let coming = Coming { transaction: transaction.to_owned(), module_dirs: module_dirs.iter().cloned().collect() };
    let written = serde_json::to_vec_pretty(&coming)
        .map_err(anyhow::Error::from)
        .and_then(|text| crate::atomic::write(&coming_file(layout), &text));
    if let Err(e) = written {
        log::warn!("{e:#}: a module upgraded in this transaction is removed before it instead of kept");
    }
}

/// Drops the record of what a transaction brought (a run outside any transaction: `sync`).
pub fn forget(layout: &Layout) {
    if let Err(e) = std::fs::remove_file(coming_file(layout)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("failed to remove {}: {e}", coming_file(layout).display());
        }
    }
}

/// The module source directories the guard saw `transaction` bring; none when it recorded
/// nothing for it (then nothing of a module came: the guard sees every incoming `dkms.conf`).
pub fn read(layout: &Layout, transaction: impl FnOnce() -> Option<String>) -> BTreeSet<String> {
    let Ok(text) = std::fs::read(coming_file(layout)) else { return Default::default() };
    match serde_json::from_slice::<Coming>(&text) {
        Ok(coming) if Some(&coming.transaction) == transaction().as_ref() => coming.module_dirs.into_iter().collect(),
        Ok(_) => Default::default(),
        Err(e) => {
            log::warn!("{} is damaged ({e}): ignored", coming_file(layout).display());
            Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_came_is_for_its_transaction_only() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        assert!(read(&layout, || Some("42.7".into())).is_empty());
        let dirs: BTreeSet<String> = ["hello-1.1".to_owned()].into();
        record(&layout, Some("42.7"), &dirs);
        assert_eq!(read(&layout, || Some("42.7".into())), dirs);
        assert!(read(&layout, || Some("43.1".into())).is_empty() && read(&layout, || None).is_empty());
        record(&layout, None, &dirs);
        assert_eq!(read(&layout, || Some("42.7".into())), dirs);
    }
}
