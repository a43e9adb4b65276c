//! The swap rules: what a wanted (module version, kernel) pair needs when some version of the
//! module is already installed for the kernel — nothing, a word that the sources are unchanged, or
//! a replacement built privately first and swapped in only when it works.

use crate::domain::{JobKind, ModuleId};
use crate::inventory::Inventory;
use crate::state::{Last, State};

/// How far to trust an installed build of the same version to be made from today's sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compare {
    /// Not at all: the package was just installed or upgraded. An installed build of the same
    /// version is rebuilt unless the state file says it was made from identical sources.
    Digest,
    /// Unless the state file says it was made from other sources (`sync`: builds made before
    /// digests were recorded are not all rebuilt).
    Recorded,
    /// Fully (a new kernel's pairs: the module's sources did not change).
    Trust,
    /// Fully, and say so: the kernel's headers were replaced in place by byte-identical ones.
    SameHeaders,
    /// Not at all: the kernel's headers were replaced in place by other ones (a kernel rebuilt
    /// under the same kver). The installed build stays until its rebuild works.
    NewHeaders,
}

/// What a wanted (module version, kernel) pair needs, given what is installed for the kernel
/// and how far an installed build of the same version is trusted (`compare`): `None` when
/// nothing. A build kept after its replacement failed is always retried, and so is a build that
/// is not signed as the system signs (when the inventory says so: `sync`).
pub(crate) fn job_for(
    inv: &Inventory,
    state: &State,
    id: &ModuleId,
    digest: Option<&str>,
    kernel: &str,
    compare: Compare,
) -> Option<JobKind> {
    let installed = inv.tree.versions_of(&id.name).find(|(_, e)| e.installed.contains(kernel)).map(|(v, _)| v);
    let built_from = |version: &str| state.get(&id.name, version, kernel).and_then(|r| r.digest.clone());
    let kernel_name = kernel;
    let kernel = kernel_name.to_owned();
    match installed {
        None => Some(JobKind::Install { kernel }),
        Some(v) if v == id.version => {
            let record = state.get(&id.name, v, kernel_name);
            let made_from = record.and_then(|r| r.digest.as_deref());
            let kept = record.is_some_and(|r| r.last == Last::Kept);
            // Not signed where a direct install would have signed it: built again (and signed).
            let not_signed = inv.not_signed.contains(&(id.name.clone(), v.to_owned(), kernel_name.to_owned()));
            let stale = kept
                || not_signed
                || match compare {
                    Compare::Digest => digest.is_none() || made_from != digest,
                    Compare::Recorded => made_from.is_some() && digest.is_some() && made_from != digest,
                    Compare::Trust | Compare::SameHeaders => false,
                    Compare::NewHeaders => true,
                };
            // dkms's link at kept sources goes back to the packaged ones.
            let relink = inv.tree.entries.get(&(id.name.clone(), v.to_owned())).is_some_and(|e| e.kept.is_some());
            match (stale, compare) {
                (true, _) => Some(JobKind::Replace { kernel, old: v.to_owned(), old_digest: built_from(v) }),
                (false, Compare::Digest | Compare::SameHeaders) => Some(JobKind::Unchanged { kernel }),
                (false, Compare::Recorded) if relink => Some(JobKind::Unchanged { kernel }),
                (false, _) => None,
            }
        }
        Some(v) => Some(JobKind::Replace { kernel, old: v.to_owned(), old_digest: built_from(v) }),
    }
}
