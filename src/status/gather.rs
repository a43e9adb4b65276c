//! What `status` reads besides the inventory and the state file: the running kernel, the module
//! files dkms's builds put under each kernel's `updates/dkms`, which job logs still exist, and
//! how the installed modules are signed against how the system signs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::domain::{Layout, Signing};
use crate::inventory::boot::ImageSeen;
pub use crate::inventory::signing::Signature;
use crate::inventory::signing::{self, SystemSigning};
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
    /// Per installed (module, version, kernel): who signed its modules, when they could be read.
    pub signatures: BTreeMap<(String, String, String), Signature>,
    /// The kernels that sign modules when the system does (`CONFIG_MODULE_SIG_HASH`).
    pub signing_kernels: BTreeSet<String>,
    /// Whether a direct `dkms install` here signs modules.
    pub system_signs: bool,
    /// The certificate dkms signs with.
    pub certificate: PathBuf,
    /// When the running kernel refuses unsigned modules (root `/` only): why, and whether it
    /// trusts `certificate` (`None`: the certificate cannot be read).
    pub enforced: Option<(String, Option<bool>)>,
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
    read_signatures(layout, inv, &mut seen);
    seen
}

/// Who signed each installed module, and whether the system and each kernel sign.
fn read_signatures(layout: &Layout, inv: &Inventory, seen: &mut Observed) {
    let system = SystemSigning::read(layout);
    seen.system_signs = system.policy.signs();
    let own = Signing::of(layout);
    seen.certificate = system.key_or(&own).cert.clone();
    let certificate = std::fs::read(&seen.certificate).unwrap_or_default();
    if !layout.is_relocated() {
        seen.enforced = signing::enforcement().map(|why| (why, signing::kernel_trusts(&certificate)));
    }
    for kver in inv.kernels.keys() {
        if signing::kernel_hash(&layout.kernel_dir(kver).join("build")).is_some() {
            seen.signing_kernels.insert(kver.clone());
        }
    }
    seen.signatures = signing::installed_signatures(layout, &inv.tree, |k| inv.kernels.contains_key(k), &certificate);
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
