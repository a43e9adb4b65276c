//! A transaction that brings another compiler, C library or binutils (see `inventory::toolchain`)
//! with the kernels or modules the guard builds for: its builds use the old toolchain, and the
//! incoming headers' helpers (fixdep, modpost, objtool), built against the new C library, run on
//! the old one. A failure then says nothing about the build after the transaction, and a success
//! is not the build the install hook would make. So the guard says once that it cannot judge,
//! stops the transaction for no failure, and hands nothing over: the install hook builds again
//! with the new toolchain.

use crate::domain::JobKind;
use crate::inventory::incoming::Transaction;
use crate::inventory::Inventory;
use crate::plan::Plan;
use crate::prebuilt::Toolchain;

/// The toolchain the test builds of `plan` use, and how the transaction changes it (see the
/// module documentation), from the system as `current` has it. Read only when there is
/// something to build.
pub(super) fn check(current: &Inventory, transaction: &Transaction, plan: &Plan) -> ToolchainCheck {
    use crate::inventory::toolchain as read;
    if plan.jobs.is_empty() {
        return ToolchainCheck::default();
    }
    let clang = plan.jobs.iter().any(|job| match &job.kind {
        JobKind::Test { build, .. } => read::built_with_clang(&build.headers),
        _ => false,
    });
    let names = read::packages(clang);
    let installed = read::installed_among(&current.package_versions, &names);
    let incoming = read::incoming(transaction, &names);
    let change = change(&installed, &incoming);
    ToolchainCheck { installed, change }
}

/// The toolchain of the guard's builds.
#[derive(Debug, Default)]
pub(super) struct ToolchainCheck {
    /// What is installed: recorded with the builds.
    pub(super) installed: Toolchain,
    /// How the transaction changes it, when it does.
    pub(super) change: Option<String>,
}

/// How the transaction changes the toolchain: the packages of `incoming` (those that count, as
/// the transaction brings them) whose version is not the `installed` one, as
/// `gcc 14.1-1 → 14.2-1`; `None` when it changes nothing.
pub fn change(installed: &Toolchain, incoming: &Toolchain) -> Option<String> {
    let names: Vec<&str> = incoming.0.keys().map(String::as_str).collect();
    let after = Toolchain(installed.0.clone().into_iter().chain(incoming.0.clone()).collect());
    let before = Toolchain(
        installed.0.iter().filter(|(n, _)| names.contains(&n.as_str())).map(|(n, v)| (n.clone(), v.clone())).collect(),
    );
    after.changes_from(&before, &names)
}

/// The one warning about it.
pub fn warning(change: &str) -> String {
    format!(
        "warning: the transaction also changes the toolchain ({change}): the DKMS guard cannot judge builds made \
         with the old one, so no failure stops the transaction; the install hook builds every module again with \
         the new one\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(list: &[(&str, &str)]) -> Toolchain {
        Toolchain(list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }

    #[test]
    fn only_what_the_transaction_brings_in_another_version_is_a_change() {
        let installed = versions(&[("gcc", "14.1-1"), ("glibc", "2.40-1"), ("binutils", "2.43-1")]);
        assert_eq!(change(&installed, &Toolchain::default()), None);
        // A reinstall of the same version changes nothing.
        assert_eq!(change(&installed, &versions(&[("gcc", "14.1-1")])), None);
        assert_eq!(
            change(&installed, &versions(&[("gcc", "14.2-1"), ("glibc", "2.40-1")])).as_deref(),
            Some("gcc 14.1-1 → 14.2-1")
        );
        assert_eq!(change(&installed, &versions(&[("lld", "19-1")])).as_deref(), Some("lld (none) → 19-1"));
        let text = warning("gcc 14.1-1 → 14.2-1");
        assert!(text.starts_with("warning: ") && text.ends_with('\n') && text.matches('\n').count() == 1, "{text}");
        assert!(text.contains("(gcc 14.1-1 → 14.2-1)"), "{text}");
    }
}
