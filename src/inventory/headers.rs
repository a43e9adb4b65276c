//! Kernel headers replaced in place (a kernel rebuilt under the same kver): the digest of a
//! kernel's `build/` tree (`digest::of_tree`: every file's bytes, links and modes), and the
//! comparison with the digest recorded before the transaction (`rebuilt`). Digests are taken
//! only for the kernels a hook's targets name, and only when they are upgraded in place.

use std::collections::BTreeMap;

use crate::domain::Layout;

/// The digest of kernel `kver`'s headers (`usr/lib/modules/KVER/build`); `None` (logged) when
/// there are none or they cannot be read.
pub fn digest(layout: &Layout, kver: &str) -> Option<String> {
    let build = layout.kernel_dir(kver).join("build");
    if !build.is_dir() {
        return None;
    }
    crate::digest::of_tree(&build).map_err(|e| log::warn!("{e:#}: the kernel's modules are rebuilt")).ok()
}

/// Of `kvers`, the kernels with a digest recorded before the transaction: each with whether its
/// headers are now byte-identical to those (headers that are gone or unreadable are not).
pub fn in_place<'a>(layout: &Layout, kvers: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, bool> {
    kvers
        .into_iter()
        .filter_map(|kver| {
            let before = crate::rebuilt::recorded(layout, kver)?;
            Some((kver.clone(), digest(layout, kver).as_deref() == Some(before.as_str())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_headers_compare_equal_and_changed_ones_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path(), None);
        let (k1, k2, k3) = ("6.1.0-1".to_owned(), "6.1.0-2".to_owned(), "6.1.0-3".to_owned());
        for k in [&k1, &k2] {
            let include = layout.kernel_dir(k).join("build/include");
            std::fs::create_dir_all(&include).unwrap();
            std::fs::write(include.join("a.h"), "#define A 1\n").unwrap();
        }
        assert_eq!(digest(&layout, &k3), None);
        for k in [&k1, &k2, &k3] {
            crate::rebuilt::record(&layout, k, &digest(&layout, &k1).unwrap()).unwrap();
        }
        std::fs::write(layout.kernel_dir(&k2).join("build/include/a.h"), "#define A 2\n").unwrap();
        let seen = in_place(&layout, [&k1, &k2, &k3, &"6.1.0-4".to_owned()]);
        assert_eq!(seen, BTreeMap::from([(k1, true), (k2, false), (k3, false)]));
    }
}
