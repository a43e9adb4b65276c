//! The report as text: pacman-style headings and items, with the fix for each thing that needs
//! attention.

use std::fmt::Write as _;

use super::gather::Signature;
use super::model::{OutOfPlace, OutOfPlaceKind, PairState, PairStatus, SourceStatus, Status};

impl Status {
    /// The report as text: pacman-style headings and items. `problems_only` (`-q`) keeps what
    /// needs attention and the verdict.
    pub fn text(&self, problems_only: bool) -> String {
        let mut t = String::new();
        let sources: Vec<&SourceStatus> =
            self.sources.iter().filter(|s| !problems_only || (s.package.is_some() && s.error.is_some())).collect();
        if !problems_only || !sources.is_empty() {
            let _ = writeln!(t, "==> Module sources");
        }
        if self.sources.is_empty() && !problems_only {
            let _ = writeln!(t, "  -> none (no usr/src/*/dkms.conf)");
        }
        for s in sources {
            let what = match (&s.module, &s.version) {
                (Some(m), Some(v)) => format!("{m}/{v}"),
                _ => s.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            };
            let from = match (&s.package, &s.package_version) {
                (Some(p), Some(v)) => format!("from {p} {v}"),
                (Some(p), None) => format!("from {p}"),
                (None, _) => "not owned by any package: dkms-hook leaves it alone".to_owned(),
            };
            let _ = write!(t, "  -> {what} {from} ({})", s.path.display());
            if s.excluded {
                t.push_str(", excluded");
            }
            t.push('\n');
            if let Some(e) = &s.error {
                let _ = writeln!(t, "     error: {e}");
            }
        }
        if !problems_only {
            self.kernels_text(&mut t);
        }
        let modules: Vec<&PairStatus> = self.modules.iter().filter(|p| !problems_only || !p.ok).collect();
        if !modules.is_empty() {
            let _ = writeln!(t, "==> Modules");
        }
        for p in modules {
            let _ = write!(t, "  -> {}/{} for {}: {}", p.module, p.version, p.kernel, word(p.state));
            match p.signature {
                Some(Signature::SystemKey) => t.push_str(", signed with dkms's key"),
                Some(Signature::OtherKey) => t.push_str(", signed with another key"),
                Some(Signature::Unsigned) => t.push_str(", unsigned"),
                None => {}
            }
            if let Some(r) = &p.reason {
                let _ = write!(t, ": {r}");
            }
            t.push('\n');
            if let Some(l) = &p.log {
                let _ = writeln!(t, "     log: {}", l.display());
            }
        }
        if let Some(m) = &self.module_signing {
            if !problems_only || m.trusted != Some(true) {
                let _ = writeln!(t, "==> Module signing: the running kernel enforces signatures ({})", m.enforced_by);
                let said = match m.trusted {
                    Some(true) => "is among the keys the kernel trusts".to_owned(),
                    Some(false) => "is not among the keys the kernel trusts".to_owned(),
                    None => "cannot be read".to_owned(),
                };
                let _ = write!(t, "  -> dkms's certificate {} {said}", m.certificate.display());
                if let Some(fix) = &m.fix {
                    let _ = write!(t, ": {fix}");
                }
                t.push('\n');
            }
        }
        if !self.out_of_place.is_empty() {
            let _ = writeln!(t, "==> Out of place");
        }
        for o in &self.out_of_place {
            let _ = writeln!(t, "  -> {}: {}", describe(o), o.fix);
        }
        if self.ok {
            let _ = writeln!(t, "==> Everything is as it should be");
        } else {
            let n = self.problems;
            let _ = writeln!(
                t,
                "==> {n} {} need{} attention",
                if n == 1 { "item" } else { "items" },
                if n == 1 { "s" } else { "" }
            );
        }
        t
    }
}

impl Status {
    fn kernels_text(&self, t: &mut String) {
        let _ = writeln!(t, "==> Kernels");
        if self.kernels.is_empty() {
            let _ = writeln!(t, "  -> none (no kernel package owns a usr/lib/modules directory)");
        }
        for k in &self.kernels {
            let pkg = match &k.package_version {
                Some(v) => format!("{} {v}", k.package),
                None => k.package.clone(),
            };
            let headers = match &k.headers {
                Some(h) => format!("headers from {h}"),
                None => format!("no headers: install {} to build modules for it", k.headers_package),
            };
            let _ = write!(t, "  -> {} from {pkg}, {headers}", k.kernel);
            if k.running {
                t.push_str(" (running)");
            }
            if k.excluded {
                t.push_str(", excluded");
            }
            t.push('\n');
        }
        if let Some(running) = self.running_kernel.as_deref().filter(|r| !self.kernels.iter().any(|k| k.kernel == *r)) {
            let _ = writeln!(t, "  -> the running kernel {running} is not an installed kernel (replaced since boot?)");
        }
    }
}

fn describe(o: &OutOfPlace) -> String {
    let id = match (&o.module, &o.version) {
        (Some(m), Some(v)) => format!("{m}/{v}"),
        _ => String::new(),
    };
    let kernels = o.kernels.join(" ");
    match o.kind {
        OutOfPlaceKind::StaleBuild => format!("{id} is built for {kernels}, which is not an installed kernel"),
        OutOfPlaceKind::OrphanRegistration => {
            let source = o.path.as_ref().map_or_else(|| "(no source link)".to_owned(), |p| p.display().to_string());
            if kernels.is_empty() {
                format!("{id} is registered with dkms but its source {source} is gone")
            } else {
                format!("{id} is registered with dkms (built for {kernels}) but its source {source} is gone")
            }
        }
        OutOfPlaceKind::UnknownModuleFile => {
            format!("{} is not known to dkms", o.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default())
        }
        OutOfPlaceKind::StaleBootImage => {
            let image = o.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            let module = match &o.version {
                Some(_) => format!("the installed {id}"),
                None => o.module.clone().unwrap_or_default(),
            };
            format!("the boot image {image} of kernel {kernels} is out of step with {module}")
        }
    }
}

/// A pair's state in the report's words.
fn word(state: PairState) -> &'static str {
    match state {
        PairState::Installed => "installed",
        PairState::Built => "built, not installed",
        PairState::Missing => "missing",
        PairState::Skipped => "skipped",
        PairState::Failed => "failed",
        PairState::WrongVermagic => "wrong vermagic",
        PairState::Kept => "kept",
        PairState::Excluded => "excluded",
    }
}
