//! What dkms has registered, built and installed, read straight from the dkms tree.
//!
//! Layout (dkms 3.x): `M/V/source -> /usr/src/M-V` registers a module version;
//! `M/V/K/ARCH/module/*.ko*` is a build for kernel K; the symlink `M/kernel-K-ARCH -> V/K/ARCH`
//! marks it installed. Reading this costs a few directory listings, where `dkms status` costs
//! ~70 ms per built module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::state::State;
use crate::targets::is_valid_name;

/// One registered module version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeEntry {
    /// The file name of the `source` link's target (the `usr/src` directory), if any.
    pub source_dir: Option<String>,
    /// When the `source` link points at a kept copy of the sources (see `kept`): its digest.
    pub kept: Option<String>,
    /// Kernels it is built for (`M/V/K/*/module` exists).
    pub built: BTreeSet<String>,
    /// Kernels it is installed for (a `M/kernel-K-ARCH` link points at this version).
    pub installed: BTreeSet<String>,
}

/// The dkms tree, by (module name, version).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DkmsTree {
    /// Registered module versions.
    pub entries: BTreeMap<(String, String), TreeEntry>,
}

impl DkmsTree {
    /// Reads the tree at `dkms_tree` (kept copies of sources live in `kept_root`); a missing tree
    /// is empty.
    pub fn read(dkms_tree: &Path, kept_root: &Path) -> Result<DkmsTree> {
        let mut tree = DkmsTree::default();
        // Names found here become dkms arguments and paths: anything that is not a plain name
        // (dkms never writes one) is left alone, neither read nor acted on.
        let valid = |what: &str, name: &str| {
            let ok = is_valid_name(name);
            if !ok {
                log::debug!("ignoring {what} {name:?} in the dkms tree {}: not a valid name", dkms_tree.display());
            }
            ok
        };
        for module in crate::dirs::subdirs(dkms_tree)? {
            if !valid("module", &module) {
                continue;
            }
            let mdir = dkms_tree.join(&module);
            for name in &crate::dirs::names(&mdir)? {
                let path = mdir.join(name);
                if name.starts_with("kernel-") {
                    // kernel-K-ARCH -> V/K/ARCH: the link target says V and K without guessing
                    // where K ends in the name.
                    if let Ok(target) = std::fs::read_link(&path) {
                        let parts: Vec<String> =
                            target.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                        if let [.., v, k, _arch] = parts.as_slice() {
                            if !valid("version", v) || !valid("kernel", k) {
                                continue;
                            }
                            tree.entries.entry((module.clone(), v.clone())).or_default().installed.insert(k.clone());
                        }
                    }
                    continue;
                }
                if !path.symlink_metadata().is_ok_and(|m| m.is_dir()) || !valid("version", name) {
                    continue;
                }
                let entry = tree.entries.entry((module.clone(), name.clone())).or_default();
                let target = std::fs::read_link(path.join("source")).ok();
                entry.source_dir =
                    target.as_ref().and_then(|t| t.file_name().map(|f| f.to_string_lossy().into_owned()));
                entry.kept = target
                    .as_ref()
                    .filter(|t| t.parent() == Some(kept_root))
                    .and(entry.source_dir.clone())
                    .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()));
                for k in crate::dirs::subdirs(&path)? {
                    if k == "source" || k == "build" || k == "log" || !valid("kernel", &k) {
                        continue;
                    }
                    if crate::dirs::subdirs(&path.join(&k))?
                        .iter()
                        .any(|arch| path.join(&k).join(arch).join("module").is_dir())
                    {
                        entry.built.insert(k);
                    }
                }
            }
        }
        Ok(tree)
    }

    /// The registered version whose `source` link points at `usr/src/<dir>`, or at a kept copy
    /// of it (dkms's own convention names that directory `NAME-VERSION`).
    pub fn by_source_dir(&self, dir: &str) -> Option<(&str, &str)> {
        self.entries
            .iter()
            .find(|((m, v), e)| match &e.kept {
                Some(_) => format!("{m}-{v}") == dir,
                None => e.source_dir.as_deref() == Some(dir),
            })
            .map(|((m, v), _)| (m.as_str(), v.as_str()))
    }

    /// The versions of module `name` registered, with their entries.
    pub fn versions_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, &'a TreeEntry)> + 'a {
        self.entries.iter().filter(move |((m, _), _)| m == name).map(|((_, v), e)| (v.as_str(), e))
    }

    /// True when dkms has `name/version` installed for `kver`.
    pub fn is_installed(&self, name: &str, version: &str, kver: &str) -> bool {
        self.entries.get(&(name.to_owned(), version.to_owned())).is_some_and(|e| e.installed.contains(kver))
    }

    /// Module versions built or installed for `kver`.
    pub fn for_kernel(&self, kver: &str) -> Vec<(&str, &str)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.built.contains(kver) || e.installed.contains(kver))
            .map(|((m, v), _)| (m.as_str(), v.as_str()))
            .collect()
    }

    /// The kept copies nothing needs any more. A copy is needed while a `source` link in the dkms
    /// tree points at it, or while a build made from it is installed and its module version's
    /// packaged sources are different (the build of an earlier release of the same version, still
    /// serving a kernel its replacement failed for).
    /// `packaged(module, version)` gives the digest of that version's packaged sources, if any.
    pub fn unneeded_copies(
        &self,
        copies: &[String],
        state: &State,
        mut packaged: impl FnMut(&str, &str) -> Option<String>,
    ) -> Vec<String> {
        let mut needed: BTreeSet<String> = self.entries.values().filter_map(|e| e.kept.clone()).collect();
        for record in state.records() {
            let Some(digest) = &record.digest else { continue };
            if needed.contains(digest) || !self.is_installed(&record.module, &record.version, &record.kernel) {
                continue;
            }
            if packaged(&record.module, &record.version).as_ref() != Some(digest) {
                needed.insert(digest.clone());
            }
        }
        copies.iter().filter(|d| !needed.contains(*d)).cloned().collect()
    }
}

/// The built module files of `M/V` for `kver` (`M/V/K/*/module/*.ko*`).
pub fn built_modules(dkms_tree: &Path, module: &str, version: &str, kver: &str) -> Vec<PathBuf> {
    let kdir = dkms_tree.join(module).join(version).join(kver);
    let mut found = Vec::new();
    for arch in crate::dirs::subdirs(&kdir).unwrap_or_default() {
        let mdir = kdir.join(arch).join("module");
        for name in crate::dirs::names(&mdir).unwrap_or_default() {
            if name.contains(".ko") {
                found.push(mdir.join(name));
            }
        }
    }
    found.sort();
    found
}
