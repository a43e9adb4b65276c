//! What `status` reads besides the inventory and the state file: the running kernel, the module
//! files dkms's builds put under each kernel's `updates/dkms`, and which job logs still exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::domain::Layout;
use crate::inventory::boot::ImageSeen;
use crate::inventory::Inventory;
use crate::state::State;

/// What `status` reads besides the inventory and the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// `uname -r`, when the root is `/`.
    pub running_kernel: Option<String>,
    /// Per directory under `usr/lib/modules`: the module files under `updates/dkms` (relative).
    pub module_files: BTreeMap<String, Vec<String>>,
    /// Per kernel: the module file stems (`hello` of `hello.ko.zst`) of dkms's installed builds.
    pub known_modules: BTreeMap<String, BTreeSet<String>>,
    /// Log files that exist (so a pruned log is not pointed to).
    pub existing_logs: BTreeSet<PathBuf>,
    /// Per kernel with a boot image the installed generator writes: what it holds.
    pub images: BTreeMap<String, ImageSeen>,
    /// Per kernel: the module version (`name/version`) each installed module file stem belongs to.
    pub owners: BTreeMap<String, BTreeMap<String, String>>,
}

/// Reads what `status` needs besides the inventory and the state file.
pub fn gather(layout: &Layout, inv: &Inventory, state: &State) -> Observed {
    let mut seen = Observed::default();
    if !layout.is_relocated() {
        seen.running_kernel = nix::sys::utsname::uname().ok().map(|u| u.release().to_string_lossy().into_owned());
    }
    for kver in crate::dirs::names(&layout.module_dir).unwrap_or_default() {
        let dir = layout.kernel_dir(&kver).join("updates/dkms");
        let mut files = Vec::new();
        walk(&dir, Path::new(""), &mut files);
        if !files.is_empty() {
            files.sort();
            seen.module_files.insert(kver, files);
        }
    }
    for ((m, v), entry) in &inv.tree.entries {
        for kver in &entry.installed {
            let stems = seen.known_modules.entry(kver.clone()).or_default();
            for path in crate::inventory::dkms_tree::built_modules(&layout.dkms_tree, m, v, kver) {
                if let Some(name) = path.file_name() {
                    let stem = stem(&name.to_string_lossy()).to_owned();
                    seen.owners.entry(kver.clone()).or_default().insert(stem.clone(), format!("{m}/{v}"));
                    stems.insert(stem);
                }
            }
        }
    }
    for kernel in inv.kernels.values() {
        let Some(image) = crate::plan::boot::image_of(inv, kernel) else { continue };
        let file = layout.on_root(Path::new(&image));
        if !file.exists() {
            continue;
        }
        let seen_image = crate::inventory::boot::read_image(layout, &kernel.kver, &image);
        seen.images.insert(kernel.kver.clone(), seen_image);
    }
    seen.existing_logs = state.records().filter_map(|r| r.log.clone()).filter(|l| l.is_file()).collect();
    seen
}

/// Module files (`*.ko*`) below `dir`, as paths relative to it.
fn walk(dir: &Path, rel: &Path, into: &mut Vec<String>) {
    for name in crate::dirs::names(dir).unwrap_or_default() {
        let path = dir.join(&name);
        let Ok(meta) = path.symlink_metadata() else { continue };
        if meta.is_dir() {
            walk(&path, &rel.join(&name), into);
        } else if name.contains(".ko") {
            into.push(rel.join(&name).to_string_lossy().into_owned());
        }
    }
}

/// `hello` of `hello.ko`, `hello.ko.zst`, `sub/hello.ko.xz`.
pub(super) fn stem(file: &str) -> &str {
    let base = file.rsplit('/').next().unwrap_or(file);
    base.find(".ko").map_or(base, |i| &base[..i])
}
