//! Kernels that come without their headers: pacman installs a kernel (`vmlinuz` among the guard's
//! targets: a downgrade with `pacman -U linux-…`, or `pacman -S linux` alone) whose headers are
//! neither installed nor coming. No module can be built for it after the transaction, and the
//! kernel it replaces takes its modules along: a critical module (a ZFS root) would be missing
//! at the next boot. The guard stops the transaction for a critical module, warns about the
//! others, before anything changes.

use std::collections::BTreeSet;

use super::bypass::BYPASS_VARIABLE;
use crate::config::Excludes;
use crate::inventory::Inventory;
use crate::targets::Targets;

/// One incoming kernel without headers, and what cannot be built for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headerless {
    pub kver: String,
    /// The package that brings the kernel, when it can be named.
    pub package: Option<String>,
    /// The critical modules that cannot be built for it.
    pub critical: Vec<String>,
    /// The other modules that cannot be built for it.
    pub other: Vec<String>,
}

/// The kernels among `targets` that come (`vmlinuz`) without headers — none among the targets,
/// none installed for that kernel version — with the packaged modules of the system as it will
/// be (`after`) sorted by `critical`, less what `excludes` leaves out. `package_of` names the
/// package bringing a kernel, where it can.
pub fn find(
    targets: &Targets,
    current: &Inventory,
    after: &Inventory,
    critical: &[glob::Pattern],
    excludes: &Excludes,
    package_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<Headerless> {
    let modules: BTreeSet<(&str, &str)> = after
        .sources
        .values()
        .filter(|s| s.package.is_some())
        .filter_map(|s| s.conf.as_ref().ok())
        .map(|c| (c.name.as_str(), c.version.as_str()))
        .collect();
    let has_headers = |kver: &str| current.kernels.get(kver).is_some_and(|k| k.headers.is_some());
    targets
        .kernels
        .iter()
        .filter(|(kver, c)| c.vmlinuz && !c.headers && !has_headers(kver) && !excludes.kernel(kver))
        .filter_map(|(kver, _)| {
            let wanted: Vec<&str> =
                modules.iter().filter(|(n, v)| !excludes.pair(n, v, kver)).map(|(n, _)| *n).collect();
            if wanted.is_empty() {
                return None;
            }
            let (critical, other): (Vec<&str>, Vec<&str>) =
                wanted.into_iter().partition(|n| critical.iter().any(|p| p.matches(n)));
            Some(Headerless {
                kver: kver.clone(),
                package: package_of(kver),
                critical: critical.into_iter().map(str::to_owned).collect(),
                other: other.into_iter().map(str::to_owned).collect(),
            })
        })
        .collect()
}

impl Headerless {
    /// How to get the headers: `pacman -S linux-headers`, when the kernel's package is known.
    fn fix(&self) -> String {
        match &self.package {
            Some(package) => format!("install {package}-headers as well: pacman -S {package}-headers"),
            None => format!("install the headers of kernel {} as well (its <kernel>-headers package)", self.kver),
        }
    }

    fn kernel(&self) -> String {
        match &self.package {
            Some(package) => format!("kernel {} ({package})", self.kver),
            None => format!("kernel {}", self.kver),
        }
    }
}

/// What to say about `headerless` kernels, and whether the transaction must stop (a critical
/// module among them).
pub fn judge(headerless: &[Headerless]) -> (String, bool) {
    let mut text = String::new();
    let stop = headerless.iter().any(|h| !h.critical.is_empty());
    for h in headerless {
        if !h.critical.is_empty() {
            text.push_str(&format!(
                "error: {} comes without its headers: {} {} critical and cannot be built for it; stopping the \
                 transaction before anything is changed\n",
                h.kernel(),
                h.critical.join(", "),
                if h.critical.len() == 1 { "is" } else { "are" },
            ));
        }
        if !h.other.is_empty() {
            text.push_str(&format!(
                "warning: {} comes without its headers: {} will not be built for it ({})\n",
                h.kernel(),
                h.other.join(", "),
                h.fix()
            ));
        }
    }
    if stop {
        text.push_str("==> Ways forward:\n");
        for h in headerless.iter().filter(|h| !h.critical.is_empty()) {
            text.push_str(&format!("  -> {}\n", h.fix()));
        }
        text.push_str(&format!(
            "  -> go ahead anyway, once (the module is then missing for that kernel): {BYPASS_VARIABLE}=off pacman …\n"
        ));
    }
    (text, stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{DkmsConf, Kernel, ModuleSource};

    fn system() -> Inventory {
        let mut inv = Inventory::default();
        let kernel = Kernel {
            kver: "6.12.1-arch1-1".into(),
            package: "linux".into(),
            pkgbase: "linux".into(),
            headers: Some("linux-headers".into()),
        };
        inv.kernels.insert(kernel.kver.clone(), kernel);
        for (dir, name, version) in [("zfs-2.2", "zfs", "2.2"), ("hello-1.0", "hello", "1.0")] {
            let conf = Ok(DkmsConf { name: name.into(), version: version.into(), ..Default::default() });
            let source = ModuleSource { dir: dir.into(), package: Some(format!("{name}-dkms")), conf, digest: None };
            inv.sources.insert(dir.into(), source);
        }
        inv
    }

    fn critical(patterns: &[&str]) -> Vec<glob::Pattern> {
        patterns.iter().map(|p| glob::Pattern::new(p).unwrap()).collect()
    }

    #[test]
    fn a_kernel_without_headers_stops_for_critical_modules_and_warns_for_the_others() {
        let inv = system();
        let targets =
            Targets::parse(b"usr/lib/modules/6.12.9-arch1-1/vmlinuz\nusr/lib/modules/6.12.1-arch1-1/modules.order\n");
        let found = find(&targets, &inv, &inv, &critical(&["zfs"]), &Excludes::default(), &|_| Some("linux".into()));
        assert_eq!(
            found,
            [Headerless {
                kver: "6.12.9-arch1-1".into(),
                package: Some("linux".into()),
                critical: vec!["zfs".into()],
                other: vec!["hello".into()],
            }]
        );
        let (text, stop) = judge(&found);
        assert!(stop);
        assert!(
            text.contains("error: kernel 6.12.9-arch1-1 (linux) comes without its headers: zfs is critical"),
            "{text}"
        );
        assert!(
            text.contains("warning: kernel 6.12.9-arch1-1 (linux) comes without its headers: hello will not"),
            "{text}"
        );
        assert!(text.contains("-> install linux-headers as well: pacman -S linux-headers"), "{text}");
        // Without critical modules: warnings only.
        let found = find(&targets, &inv, &inv, &[], &Excludes::default(), &|_| None);
        let (text, stop) = judge(&found);
        assert!(!stop && text.starts_with("warning: kernel 6.12.9-arch1-1 comes without its headers: hello, zfs"));
    }

    #[test]
    fn kernels_with_headers_coming_or_installed_are_fine() {
        let inv = system();
        for targets in [
            &b"usr/lib/modules/6.12.9-arch1-1/vmlinuz\nusr/lib/modules/6.12.9-arch1-1/build/include/\n"[..],
            b"usr/lib/modules/6.12.1-arch1-1/vmlinuz\n",
            b"usr/src/zfs-2.3/dkms.conf\n",
        ] {
            let found = find(&Targets::parse(targets), &inv, &inv, &critical(&["*"]), &Excludes::default(), &|_| None);
            assert!(found.is_empty(), "{found:?}");
        }
    }

    #[test]
    fn excluded_kernels_and_modules_need_no_headers() {
        let inv = system();
        let targets = Targets::parse(b"usr/lib/modules/6.12.9-rt1/vmlinuz\n");
        let excludes = Excludes { kernels: critical(&["*-rt*"]), modules: vec![] };
        assert!(find(&targets, &inv, &inv, &critical(&["zfs"]), &excludes, &|_| None).is_empty());
        let excludes = Excludes { kernels: vec![], modules: critical(&["zfs"]) };
        let found = find(&targets, &inv, &inv, &critical(&["zfs"]), &excludes, &|_| None);
        assert_eq!(found[0].critical, Vec::<String>::new());
        assert_eq!(found[0].other, ["hello"]);
    }
}
