//! How `lint` reports: pacman-style text, one finding per line (`LEVEL: PACKAGE [TAG]: what is
//! wrong: the fix`), under a `==>` heading per package, printed as each package (and each build)
//! is done; or, with `--json`, one document for the whole run, documented in
//! `docs/lint-json.md` (fields are only ever added; `schema` changes when anything else would).
//! Pure: strings in, strings out; the reporter prints them.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Verbosity;
use crate::domain::ModuleId;
use crate::inventory::package::Package;
use crate::report::count;

use super::build::{BuildOutcome, BuildResult};
use super::finding::{Finding, Level};

/// The JSON format's version.
pub const SCHEMA: u32 = 1;

/// Everything `lint --json` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    /// True when no package has an error (the exit status is 0).
    pub ok: bool,
    pub errors: usize,
    pub warnings: usize,
    pub packages: Vec<PackageReport>,
}

impl Report {
    pub fn new(packages: Vec<PackageReport>) -> Report {
        let errors = packages.iter().map(|p| p.count(Level::Error)).sum();
        let warnings = packages.iter().map(|p| p.count(Level::Warning)).sum();
        Report { schema: SCHEMA, ok: errors == 0, errors, warnings, packages }
    }
}

/// One package's findings and builds.
#[derive(Debug, Clone, Serialize)]
pub struct PackageReport {
    /// The package file.
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    /// Every finding, build failures included, in the order printed.
    pub findings: Vec<Finding>,
    /// With `--build`: one entry per module version and installed kernel.
    pub builds: Vec<BuildResult>,
}

impl PackageReport {
    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }
}

/// `==> Linting NAME VERSION (PATH)`.
pub fn heading(package: &Package) -> String {
    format!("==> Linting {} {} ({})\n", package.name, package.version, package.path.display())
}

/// One finding: `LEVEL: PACKAGE [TAG]: MESSAGE: FIX`, then its details, indented.
pub fn finding(package: &str, finding: &Finding) -> String {
    let mut text =
        format!("{}: {package} [{}]: {}: {}\n", finding.level.word(), finding.tag, finding.message, finding.fix);
    for line in &finding.details {
        text.push_str(&format!("       {line}\n"));
    }
    text
}

/// Before a module's builds.
pub fn build_heading(module: &ModuleId, kernels: usize) -> String {
    format!("==> Building {module} for {} in a private dkms tree\n", count(kernels, "kernel"))
}

/// A module source that is not built, and why.
pub fn not_built(dir: &str) -> String {
    format!("  -> usr/src/{dir}: not built: fix the dkms.conf errors above first\n")
}

/// One build: a failure as its finding, anything else as a `  -> ` line; with `-v`, dkms's output.
pub fn build(package: &str, result: &BuildResult, verbosity: Verbosity) -> String {
    let on = format!("{}/{} for {}", result.module, result.version, result.kernel);
    let mut text = match (&result.finding, result.result) {
        (Some(f), _) => finding(package, f),
        (None, _) if verbosity == Verbosity::Quiet => String::new(),
        (None, BuildOutcome::Built) => {
            format!("  -> {on}: built in {:.1} s, vermagic checked\n", result.seconds)
        }
        (None, BuildOutcome::Skipped) => format!("  -> {on}: skipped (BUILD_EXCLUSIVE does not match this kernel)\n"),
        (None, BuildOutcome::NoHeaders) => format!(
            "  -> {on}: not built: the kernel has no headers (install {})\n",
            result.headers_package.as_deref().unwrap_or("its headers")
        ),
        (None, _) => format!("  -> {on}: interrupted\n"),
    };
    if verbosity == Verbosity::Verbose && !result.output.trim().is_empty() {
        text.push_str("     dkms output:\n");
        for line in result.output.lines().filter(|l| !l.trim().is_empty()) {
            text.push_str(&format!("       {}\n", line.trim_end()));
        }
    }
    text
}

/// `==> NAME VERSION: 2 errors, 1 warning`.
pub fn summary(report: &PackageReport) -> String {
    let (errors, warnings) = (report.count(Level::Error), report.count(Level::Warning));
    let counts = if errors + warnings == 0 {
        "no errors or warnings".to_owned()
    } else {
        format!("{}, {}", count(errors, "error"), count(warnings, "warning"))
    };
    format!("==> {} {}: {counts}\n", report.name, report.version)
}

/// The run was stopped by `signal` before it was done.
pub fn stopped(signal: nix::sys::signal::Signal) -> String {
    format!("==> Stopped by {signal}: not every package or build was checked; nothing was installed or left behind\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::finding::Tag;

    fn result(outcome: BuildOutcome, finding: Option<Finding>) -> BuildResult {
        BuildResult {
            module: "a".into(),
            version: "1".into(),
            kernel: "6.1-x".into(),
            result: outcome,
            seconds: 2.04,
            headers_package: (outcome == BuildOutcome::NoHeaders).then(|| "linux-x-headers".to_owned()),
            finding,
            output: "Building module:\n\ncleaning\n".into(),
        }
    }

    #[test]
    fn lines() {
        let f = Finding::new(Tag::DkmsMissingDependency, "dkms is not in depends", "add dkms to depends=()");
        assert_eq!(
            finding("a-dkms", &f),
            "error: a-dkms [dkms-missing-dependency]: dkms is not in depends: add dkms to depends=()\n"
        );
        let failed = Finding::new(Tag::BuildFailed, "a/1 for 6.1-x: dkms exit 10", "fix it")
            .with_details(vec!["a.c:1: error: x".into(), "…".into()]);
        let n = Verbosity::Normal;
        assert_eq!(
            build("a-dkms", &result(BuildOutcome::Failed, Some(failed)), n),
            "error: a-dkms [build-failed]: a/1 for 6.1-x: dkms exit 10: fix it\n       a.c:1: error: x\n       …\n"
        );
        assert_eq!(
            build("a-dkms", &result(BuildOutcome::Built, None), n),
            "  -> a/1 for 6.1-x: built in 2.0 s, vermagic checked\n"
        );
        assert!(build("a-dkms", &result(BuildOutcome::NoHeaders, None), n).contains("install linux-x-headers"));
        assert_eq!(build("a-dkms", &result(BuildOutcome::Skipped, None), Verbosity::Quiet), "");
        assert_eq!(
            build("a-dkms", &result(BuildOutcome::Skipped, None), Verbosity::Verbose),
            "  -> a/1 for 6.1-x: skipped (BUILD_EXCLUSIVE does not match this kernel)\n     dkms output:\n       \
             Building module:\n       cleaning\n"
        );
    }

    #[test]
    fn summaries_and_the_json_totals() {
        let f = |tag| Finding::new(tag, "m", "f");
        let report = PackageReport {
            path: "/x/a-dkms-1-1-any.pkg.tar.zst".into(),
            name: "a-dkms".into(),
            version: "1-1".into(),
            findings: vec![f(Tag::NoDkmsConf), f(Tag::ScriptletUnneeded), f(Tag::HardHeadersDependency)],
            builds: vec![],
        };
        assert_eq!(summary(&report), "==> a-dkms 1-1: 1 error, 2 warnings\n");
        let clean = PackageReport { findings: vec![], ..report.clone() };
        assert_eq!(summary(&clean), "==> a-dkms 1-1: no errors or warnings\n");
        let all = Report::new(vec![report, clean]);
        assert_eq!((all.ok, all.errors, all.warnings), (false, 1, 2));
        let json = serde_json::to_value(&all).unwrap();
        assert_eq!(json["packages"][0]["findings"][0]["tag"], "no-dkms-conf");
        assert_eq!(json["packages"][0]["findings"][0]["level"], "error");
        assert!(json["packages"][0]["findings"][0].get("details").is_none());
    }
}
