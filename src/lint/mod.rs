//! `dkms-hook lint`: namcap for `*-dkms` packages. It tells a packager what dkms-hook (and dkms)
//! expect of a package — the sources in `usr/src/NAME-VERSION/` with a dkms.conf that names them,
//! a dependency on dkms and on no kernel's headers, no `.install` doing the hooks' work, a build
//! for the kernel dkms asks for — and, with `--build`, whether the module builds for every
//! installed kernel.
//!
//! Three stages, as everywhere in dkms-hook: reading ([`targets`] finds the package files,
//! [`gather`] extracts what the checks need into a temporary directory and reads the dkms.conf
//! the way every command does, unprivileged), pure checks ([`checks`]), and building
//! ([`build`], only with `--build`). Findings are printed through the reporter as each package is
//! done; the exit status is decided at the end: 0 without errors, 1 with one, 2 when a path is not
//! a package (or a directory with a PKGBUILD and a built package) or the builds cannot run.

pub mod build;
pub mod checks;
pub mod finding;
pub mod portability;
pub mod render;
pub mod scriptlet;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::config::{Config, Verbosity};
use crate::domain::ModuleId;
use crate::inventory::dkms_conf::{self, Evaluate};
use crate::inventory::package::{self, Package, Scratch};
use crate::report::Reporter;

use build::Builder;
use checks::{Source, Subject};
pub use finding::{Finding, Level, Tag};
use render::{PackageReport, Report};

/// The largest Makefile or scriptlet read (larger ones are read up to this).
const TEXT_CAP: u64 = 1 << 20;

/// Lints the packages at `paths`; with `build`, builds their modules too; with `json`, prints one
/// JSON document instead of text.
pub fn run(config: &Config, paths: &[PathBuf], build: bool, json: bool) -> Result<ExitCode> {
    // A stopping signal ends the run after the package at hand, so that its temporary directory
    // is removed (and a running build is stopped).
    crate::interrupt::install()?;
    let packages = targets(paths)?;
    let builder = if build { Some(Builder::prepare(config)?) } else { None };
    let verbosity = if json { Verbosity::Quiet } else { config.verbosity };
    let reporter = Reporter::new(config.verbosity);
    let print = |text: &str| {
        if !json {
            reporter.print(text);
        }
    };
    let mut reports = Vec::new();
    for package in packages {
        reports.push(lint_package(package, builder.as_ref(), verbosity, &print)?);
        if crate::interrupt::STOP.is_set() {
            break;
        }
    }
    let report = Report::new(reports);
    if json {
        let text = serde_json::to_string_pretty(&report).context("failed to write JSON")?;
        reporter.print(&format!("{text}\n"));
    }
    if let Some(signal) = crate::interrupt::received() {
        print(&render::stopped(signal));
        return Ok(ExitCode::from(crate::interrupt::exit_status(signal)));
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Checks one package (and builds its modules with `builder`), printing as it goes.
fn lint_package(
    package: Package,
    builder: Option<&Builder>,
    verbosity: Verbosity,
    print: &dyn Fn(&str),
) -> Result<PackageReport> {
    if verbosity > Verbosity::Quiet {
        print(&render::heading(&package));
    }
    let scratch = Scratch::new("dkms-hook-lint.")?;
    let subject = gather(package, scratch.path())?;
    let findings = checks::check(&subject);
    let name = subject.package.name.clone();
    let text: String = findings.iter().map(|f| render::finding(&name, f)).collect();
    print(&text);
    let mut report = PackageReport {
        path: subject.package.path.clone(),
        name,
        version: subject.package.version.clone(),
        findings,
        builds: Vec::new(),
    };
    if let Some(builder) = builder {
        build_sources(builder, &subject, scratch.path(), &mut report, verbosity, print);
    }
    if verbosity > Verbosity::Quiet {
        print(&render::summary(&report));
    }
    Ok(report)
}

/// Builds every buildable module source of `subject`, adding each result (and the finding of a
/// failed build) to `report` and printing it as it is known.
fn build_sources(
    builder: &Builder,
    subject: &Subject,
    scratch: &Path,
    report: &mut PackageReport,
    verbosity: Verbosity,
    print: &dyn Fn(&str),
) {
    for source in &subject.sources {
        let Some(conf) = source.buildable() else {
            print(&render::not_built(&source.dir));
            continue;
        };
        let module = ModuleId::new(&conf.name, &conf.version);
        if verbosity > Verbosity::Quiet {
            print(&render::build_heading(&module, builder.kernels().len()));
        }
        builder.build(&module, &scratch.join("usr/src"), &mut |result| {
            print(&render::build(&report.name, &result, verbosity));
            report.findings.extend(result.finding.clone());
            report.builds.push(result);
        });
    }
}

/// The packages to lint: each path is a package file, or a directory with a PKGBUILD whose built
/// packages are taken (see [`choose`]). Anything else is a usage error naming the fix.
pub fn targets(paths: &[PathBuf]) -> Result<Vec<Package>> {
    let mut packages = Vec::new();
    for path in paths {
        if !path.exists() {
            anyhow::bail!(
                "{}: no such file or directory: pass a package file or a directory with a PKGBUILD",
                path.display()
            );
        }
        if !path.is_dir() {
            packages.push(Package::read(path)?);
            continue;
        }
        if !path.join("PKGBUILD").is_file() {
            anyhow::bail!(
                "{}: no PKGBUILD in this directory: pass a package file (*.pkg.tar.*) or the directory of a PKGBUILD \
                 and the package makepkg built there",
                path.display()
            );
        }
        let files = package::package_files(path)?;
        if files.is_empty() {
            anyhow::bail!(
                "{}: no built package (*.pkg.tar.*) beside the PKGBUILD: run makepkg there first (with PKGDEST set, \
                 pass the package file instead)",
                path.display()
            );
        }
        let read: Vec<Package> = files.iter().map(|f| Package::read(f)).collect::<Result<_, _>>()?;
        packages.extend(choose(read));
    }
    Ok(packages)
}

/// Of the packages beside a PKGBUILD: the newest version of each name (older builds stay
/// around), and of those the ones with a dkms.conf anywhere — a split package's other parts and
/// `-debug` packages are not DKMS packages — unless none has one.
pub fn choose(packages: Vec<Package>) -> Vec<Package> {
    let mut newest: BTreeMap<String, Package> = BTreeMap::new();
    for package in packages {
        match newest.get(&package.name) {
            Some(kept) if alpm::vercmp(kept.version.as_str(), package.version.as_str()).is_ge() => {}
            _ => {
                newest.insert(package.name.clone(), package);
            }
        }
    }
    let newest: Vec<Package> = newest.into_values().collect();
    let has_conf = |p: &Package| p.files.iter().any(|f| f == "dkms.conf" || f.ends_with("/dkms.conf"));
    if newest.iter().any(has_conf) {
        newest.into_iter().filter(has_conf).collect()
    } else {
        newest
    }
}

/// Reads what the checks look at: the module sources (extracted into `scratch`, their dkms.conf
/// read unprivileged) and the install scriptlet.
pub fn gather(package: Package, scratch: &Path) -> Result<Subject> {
    let dirs = checks::module_source_dirs(&package.files);
    let members: Vec<String> = dirs.iter().map(|d| format!("usr/src/{d}")).collect();
    if !members.is_empty() {
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        package::extract(&package.path, &members, scratch)?;
    }
    let mut sources = Vec::new();
    for dir in dirs {
        let conf_path = scratch.join("usr/src").join(&dir).join("dkms.conf");
        // Messages name the file as it is in the package, not in the temporary directory.
        let shown = format!("{}/", scratch.display());
        let conf = dkms_conf::read_values(&conf_path, Evaluate::Unprivileged).map_err(|e| e.replace(&shown, ""));
        let build_files = checks::build_files(&package.files, &dir)
            .into_iter()
            .map(|f| {
                let text = read_text(&scratch.join(&f));
                (f, text)
            })
            .collect();
        sources.push(Source { conf_text: read_text(&conf_path), dir, conf, build_files });
    }
    let scriptlet = if package.has_install {
        let bytes = package::read_member(&package.path, ".INSTALL")?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        None
    };
    Ok(Subject { package, sources, scriptlet })
}

/// A text file's content, at most [`TEXT_CAP`] bytes of it; empty when it cannot be read.
fn read_text(path: &Path) -> String {
    use std::io::Read;
    let mut bytes = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(TEXT_CAP).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, files: &[&str]) -> Package {
        Package {
            path: format!("{name}-{version}-any.pkg.tar.zst").into(),
            name: name.into(),
            version: version.into(),
            depends: vec![],
            files: files.iter().map(|f| f.to_string()).collect(),
            has_install: false,
        }
    }

    #[test]
    fn chooses_the_newest_dkms_packages_beside_a_pkgbuild() {
        let conf = &["usr/src/a-1/dkms.conf"][..];
        let chosen = |list: Vec<Package>| -> Vec<String> {
            choose(list).into_iter().map(|p| format!("{} {}", p.name, p.version)).collect()
        };
        assert_eq!(
            chosen(vec![pkg("a-dkms", "1.0-1", conf), pkg("a-dkms", "1.10-1", conf), pkg("a-dkms", "1.9-2", conf)]),
            ["a-dkms 1.10-1"]
        );
        assert_eq!(chosen(vec![pkg("a-dkms", "1:0.1-1", conf), pkg("a-dkms", "2.0-1", conf)]), ["a-dkms 1:0.1-1"]);
        // A split package's other part and a -debug package are left out…
        assert_eq!(
            chosen(vec![
                pkg("a-utils", "1-1", &["usr/bin/a"]),
                pkg("a-dkms", "1-1", conf),
                pkg("a-dkms-debug", "1-1", &[])
            ]),
            ["a-dkms 1-1"]
        );
        // … a misplaced dkms.conf still makes a DKMS package …
        assert_eq!(chosen(vec![pkg("a", "1-1", &["usr/src/a/src/dkms.conf"]), pkg("b", "1-1", &[])]), ["a 1-1"]);
        // … and without any dkms.conf every package is linted (and reported as not one).
        assert_eq!(chosen(vec![pkg("b", "1-1", &[]), pkg("a", "1-1", &[])]), ["a 1-1", "b 1-1"]);
    }
}
