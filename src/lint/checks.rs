//! The checks: what was read from one package in, findings out. No file system, no processes;
//! every check is unit-tested as a table of cases.

use crate::inventory::package::Package;
use crate::inventory::DkmsConf;

use super::finding::{Finding, Tag};
use super::{portability, scriptlet};

/// Everything the checks look at in one package.
#[derive(Debug, Clone)]
pub struct Subject {
    pub package: Package,
    /// Each `usr/src/DIR/dkms.conf` of the package, in the order of [`module_source_dirs`].
    pub sources: Vec<Source>,
    /// The install scriptlet's text, when the package has one.
    pub scriptlet: Option<String>,
}

/// A module source directory `usr/src/DIR` of the package.
#[derive(Debug, Clone)]
pub struct Source {
    /// DIR.
    pub dir: String,
    /// The dkms.conf values as dkms-hook reads them (unprivileged), or why they cannot be read.
    pub conf: Result<DkmsConf, String>,
    /// The dkms.conf as written.
    pub conf_text: String,
    /// The Makefiles and Kbuild files below the directory: package path and text.
    pub build_files: Vec<(String, String)>,
}

impl Source {
    /// `usr/src/DIR/dkms.conf`.
    pub fn conf_path(&self) -> String {
        format!("usr/src/{}/dkms.conf", self.dir)
    }

    /// The values, when they read and the directory is the one dkms looks in: the module can be
    /// built.
    pub fn buildable(&self) -> Option<&DkmsConf> {
        self.conf.as_ref().ok().filter(|c| c.source_dir() == self.dir)
    }
}

/// The directories DIR for which the package has `usr/src/DIR/dkms.conf`, in file-list order.
pub fn module_source_dirs(files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| f.strip_prefix("usr/src/")?.strip_suffix("/dkms.conf"))
        .filter(|dir| !dir.is_empty() && !dir.contains('/'))
        .map(str::to_owned)
        .collect()
}

/// The files below `usr/src/DIR/` that make reads: Makefiles, Kbuild files, `*.mk`.
pub fn build_files(files: &[String], dir: &str) -> Vec<String> {
    let prefix = format!("usr/src/{dir}/");
    files
        .iter()
        .filter(|f| f.starts_with(&prefix) && !f.ends_with('/'))
        .filter(|f| {
            let name = f.rsplit('/').next().unwrap_or(f);
            matches!(name, "Makefile" | "makefile" | "GNUmakefile" | "Kbuild")
                || name.starts_with("Makefile.")
                || name.starts_with("Kbuild.")
                || name.ends_with(".mk")
        })
        .cloned()
        .collect()
}

/// Every finding for `subject`, in a stable order: layout, each source's dkms.conf and build,
/// dependencies, the scriptlet.
pub fn check(subject: &Subject) -> Vec<Finding> {
    let mut findings = layout(&subject.package.files);
    for source in &subject.sources {
        findings.extend(dkms_conf(source, subject.package.pkgver()));
        findings.extend(running_kernel(source));
    }
    findings.extend(dependencies(&subject.package));
    if let Some(text) = &subject.scriptlet {
        findings.extend(install_scriptlet(text));
    }
    findings
}

/// dkms reads a module's dkms.conf only at `usr/src/NAME-VERSION/dkms.conf`.
pub fn layout(files: &[String]) -> Vec<Finding> {
    let sources = module_source_dirs(files);
    let misplaced: Vec<&String> = files
        .iter()
        .filter(|f| *f == "dkms.conf" || f.ends_with("/dkms.conf"))
        .filter(|f| {
            let dir = f.strip_prefix("usr/src/").and_then(|r| r.strip_suffix("/dkms.conf"));
            !dir.is_some_and(|d| !d.is_empty() && !d.contains('/'))
        })
        .collect();
    let mut findings: Vec<Finding> = misplaced
        .iter()
        .map(|path| {
            Finding::new(
                Tag::DkmsConfMisplaced,
                format!("{path} is not where dkms looks for a dkms.conf (usr/src/NAME-VERSION/dkms.conf)"),
                "install the module sources with their dkms.conf into usr/src/NAME-VERSION/",
            )
        })
        .collect();
    if sources.is_empty() && misplaced.is_empty() {
        findings.push(Finding::new(
            Tag::NoDkmsConf,
            "the package has no usr/src/NAME-VERSION/dkms.conf: it is not a DKMS package, and no hook builds anything \
             for it",
            "install the module sources with a dkms.conf into usr/src/NAME-VERSION/ (or lint the package that does)",
        ));
    }
    findings
}

/// The dkms.conf of one source: readable, in its directory, naming its modules as dkms needs,
/// without options dkms 3 deprecates, and with the package's version.
pub fn dkms_conf(source: &Source, pkgver: &str) -> Vec<Finding> {
    let path = source.conf_path();
    let conf = match &source.conf {
        Ok(conf) => conf,
        Err(why) => {
            return vec![Finding::new(
                Tag::DkmsConfUnreadable,
                format!("dkms.conf cannot be read: {why}"),
                "make dkms.conf a bash file that sets PACKAGE_NAME and PACKAGE_VERSION (dkms sources it)",
            )];
        }
    };
    let mut findings = Vec::new();
    if conf.source_dir() != source.dir {
        findings.push(Finding::new(
            Tag::DkmsConfWrongDirectory,
            format!(
                "{path} says PACKAGE_NAME={} PACKAGE_VERSION={}, so dkms looks for the sources in usr/src/{}, not \
                 usr/src/{}",
                conf.name,
                conf.version,
                conf.source_dir(),
                source.dir
            ),
            "make the directory usr/src/PACKAGE_NAME-PACKAGE_VERSION, e.g. by writing pkgver into dkms.conf in \
             package() (sed \"s/@PKGVER@/$pkgver/\")",
        ));
    } else if conf.version != pkgver {
        findings.push(Finding::new(
            Tag::PackageVersionDiffers,
            format!(
                "{path} says PACKAGE_VERSION={} but the package's pkgver is {pkgver}: dkms and pacman name different \
                 versions",
                conf.version
            ),
            "take PACKAGE_VERSION and the directory name from pkgver in package()",
        ));
    }
    findings.extend(module_records(conf, &path));
    for option in &conf.deprecated {
        let (what, fix) = match option.as_str() {
            "OBSOLETE_BY" => ("dkms 3 maps it to BUILD_EXCLUSIVE_KERNEL_MAX", "use BUILD_EXCLUSIVE_KERNEL_MAX"),
            "CLEAN" => ("dkms 3.1.8 and later never run it (they delete the build directory)", "drop the CLEAN line"),
            "REMAKE_INITRD" => {
                ("dkms 3 ignores it (mkinitcpio's own hook rebuilds the initramfs)", "drop the REMAKE_INITRD line")
            }
            _ => ("dkms 3 ignores it (use a file in /usr/lib/modprobe.d/ instead)", "drop the line"),
        };
        findings.push(Finding::new(
            Tag::DeprecatedOption,
            format!("{path} sets {option}, which dkms reports as deprecated on every build: {what}"),
            fix,
        ));
    }
    findings
}

/// Module records as dkms 3 checks them when it reads dkms.conf.
fn module_records(conf: &DkmsConf, path: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let records = conf.built_module_names.len();
    if records == 0 {
        findings.push(Finding::new(
            Tag::NoBuiltModuleName,
            format!("{path} sets no BUILT_MODULE_NAME: dkms counts no module, so it builds and installs nothing"),
            "set BUILT_MODULE_NAME[0] (the .ko file's name without .ko) and DEST_MODULE_LOCATION[0]",
        ));
    }
    for (i, (name, location)) in conf.built_module_names.iter().zip(&conf.dest_module_locations).enumerate() {
        if name.is_empty() && records == 1 {
            findings.push(Finding::new(
                Tag::ImplicitBuiltModuleName,
                format!(
                    "{path} does not set BUILT_MODULE_NAME[0]: dkms assumes the module is {}.ko, after PACKAGE_NAME",
                    conf.name
                ),
                format!("set BUILT_MODULE_NAME[0]=\"{}\" (or the .ko file's real name)", conf.name),
            ));
        } else if name.is_empty() {
            findings.push(Finding::new(
                Tag::NoBuiltModuleName,
                format!("{path} does not set BUILT_MODULE_NAME[{i}]: dkms refuses a module record without it"),
                format!("set BUILT_MODULE_NAME[{i}] (the .ko file's name without .ko)"),
            ));
        } else if name.ends_with(".ko") || name.ends_with(".o") {
            let stem = name.trim_end_matches(".ko").trim_end_matches(".o");
            findings.push(Finding::new(
                Tag::BuiltModuleNameSuffix,
                format!("{path} sets BUILT_MODULE_NAME[{i}]=\"{name}\": dkms refuses a name that ends in .ko or .o"),
                format!("set BUILT_MODULE_NAME[{i}]=\"{stem}\""),
            ));
        }
        let known = ["/kernel", "/updates", "/extra"].iter().any(|p| location.starts_with(p));
        if !known {
            let what = if location.is_empty() {
                format!("does not set DEST_MODULE_LOCATION[{i}]")
            } else {
                format!("sets DEST_MODULE_LOCATION[{i}]=\"{location}\"")
            };
            findings.push(Finding::new(
                Tag::BadDestModuleLocation,
                format!(
                    "{path} {what}: dkms refuses the module unless it starts with /kernel, /updates or /extra (Arch's \
                     dkms then installs into /updates/dkms whatever it says)"
                ),
                format!("set DEST_MODULE_LOCATION[{i}]=\"/updates/dkms\""),
            ));
        }
    }
    findings
}

/// `uname -r` in dkms.conf or a Makefile builds for the running kernel, not the one dkms asks for:
/// in dkms.conf always; in a Makefile where the build uses its value (see [`portability`]).
pub fn running_kernel(source: &Source) -> Vec<Finding> {
    let mut findings = Vec::new();
    for place in portability::in_shell(&source.conf_text) {
        findings.push(Finding::new(
            Tag::BuildsForRunningKernel,
            format!(
                "{} line {} uses `uname -r` ({}): that is the running kernel, not the one dkms builds for",
                source.conf_path(),
                place.line,
                place.text
            ),
            "use $kernelver or ${kernel_source_dir}, which dkms sets to the kernel it builds for",
        ));
    }
    // Without MAKE (an unreadable dkms.conf, reported already) a Makefile's fallback cannot be
    // told from what the build uses.
    let Ok(conf) = &source.conf else { return findings };
    let kbuild_only = portability::kbuild_only(&conf.make);
    let texts: Vec<&str> = source.build_files.iter().map(|(_, text)| text.as_str()).collect();
    let used = portability::used_variables(&texts, kbuild_only, &conf.make);
    for (path, text) in &source.build_files {
        for place in portability::in_makefile(text) {
            let fix = match &place.variable {
                Some(var) if portability::set_by_build(var, &conf.make) || !used.contains(var) => continue,
                None if place.recipe && kbuild_only => continue,
                Some(var) => {
                    // A directory gets the headers, anything else the kernel's version.
                    let directory = ["DIR", "SRC", "PATH", "BUILD"].iter().any(|w| var.to_uppercase().contains(w));
                    let value = if directory { "${kernel_source_dir}" } else { "$kernelver" };
                    format!("pass {var}={value} on make's command line in MAKE[0], or use $(KERNELRELEASE), which dkms sets")
                }
                None => "use a variable that MAKE[0] sets (KDIR=${kernel_source_dir}), or $(KERNELRELEASE), which \
                         dkms sets"
                    .to_owned(),
            };
            findings.push(Finding::new(
                Tag::BuildsForRunningKernel,
                format!(
                    "{path} line {} uses `uname -r` ({}): that is the running kernel, not the one dkms builds for",
                    place.line, place.text
                ),
                fix,
            ));
        }
    }
    findings
}

/// Headers packages are per kernel: depending on one pulls in the wrong ones.
pub fn dependencies(package: &Package) -> Vec<Finding> {
    let mut findings = Vec::new();
    if !package.depends_on("dkms") {
        findings.push(Finding::new(
            Tag::DkmsMissingDependency,
            "dkms is not in depends: without it pacman runs no DKMS hook, and nothing builds the module",
            "add dkms to depends=()",
        ));
    }
    for dep in package.depends.iter().filter(|d| d.name.ends_with("-headers")) {
        findings.push(Finding::new(
            Tag::HardHeadersDependency,
            format!(
                "depends has {}: headers belong to one kernel, so this pulls in {} even for users of other kernels; \
                 dkms-hook names the missing headers package of each kernel",
                dep.text, dep.name
            ),
            format!("drop {} from depends (at most list it in optdepends)", dep.name),
        ));
    }
    findings
}

/// The hooks add, build, install and remove DKMS modules: a scriptlet must not.
pub fn install_scriptlet(text: &str) -> Vec<Finding> {
    let script = scriptlet::read(text);
    let mut findings = Vec::new();
    for program in ["dkms", "depmod", "modprobe", "insmod", "rmmod"] {
        let lines: Vec<String> =
            script.commands.iter().filter(|c| c.program == program).map(|c| c.line.to_string()).collect();
        if lines.is_empty() {
            continue;
        }
        let why = match program {
            "dkms" => {
                "dkms-hook's hooks already add, build, install and remove the module for every kernel, so it is \
                       done twice, or undone"
            }
            "depmod" => "dkms-hook runs depmod once for every kernel that changed, after the modules are in place",
            _ => {
                "loading or unloading modules in the middle of a transaction can load one built for another kernel \
                  or one about to be replaced"
            }
        };
        findings.push(Finding::new(
            Tag::ScriptletRunsModuleTools,
            format!(
                "the .install scriptlet runs {program} ({} {}): {why}",
                plural(lines.len(), "line"),
                lines.join(", ")
            ),
            format!("remove the {program} calls from the .install file (and the file, if nothing else is left)"),
        ));
    }
    // Calling one of its own functions runs what that function holds, which is checked itself.
    let printing = script
        .commands
        .iter()
        .all(|c| scriptlet::PRINTING.contains(&c.program.as_str()) || script.functions.contains(&c.program));
    if findings.is_empty() && printing {
        let what = if script.commands.is_empty() { "does nothing" } else { "only prints messages" };
        findings.push(Finding::new(
            Tag::ScriptletUnneeded,
            format!("the .install scriptlet {what}: dkms-hook's hooks do all the DKMS work"),
            "drop the .install file and the install= line of the PKGBUILD (put notes for users in the package's \
             documentation)",
        ));
    }
    findings
}

/// `line` or `lines`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        noun.to_owned()
    } else {
        format!("{noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::package::Dependency;

    fn tags(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.tag.name()).collect()
    }

    fn files(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn conf(name: &str, version: &str) -> DkmsConf {
        DkmsConf {
            name: name.into(),
            version: version.into(),
            built_module_names: vec![name.into()],
            dest_module_locations: vec!["/updates/dkms".into()],
            make: vec!["make KDIR=${kernel_source_dir}".into()],
            ..Default::default()
        }
    }

    fn source(dir: &str, conf: Result<DkmsConf, String>) -> Source {
        Source { dir: dir.into(), conf, conf_text: String::new(), build_files: vec![] }
    }

    #[test]
    fn layout_needs_a_dkms_conf_where_dkms_looks() {
        for (list, want) in [
            (&["usr/", "usr/src/", "usr/src/a-1/", "usr/src/a-1/dkms.conf"][..], &[][..]),
            (&["usr/src/a-1/dkms.conf", "usr/src/b-2/dkms.conf"], &[]),
            (&["usr/", "usr/share/doc/a/README"], &["no-dkms-conf"]),
            (&[], &["no-dkms-conf"]),
            (&["usr/src/a-1/src/dkms.conf"], &["dkms-conf-misplaced"]),
            (&["usr/src/dkms.conf", "usr/src/a-1/dkms.conf"], &["dkms-conf-misplaced"]),
            (&["usr/lib/dkms/a/dkms.conf"], &["dkms-conf-misplaced"]),
            (&["usr/src/a-1/dkms.conf.orig", "usr/src/a-1/xdkms.conf"], &["no-dkms-conf"]),
        ] {
            assert_eq!(tags(&layout(&files(list))), want, "{list:?}");
        }
        assert_eq!(module_source_dirs(&files(&["usr/src/a-1/dkms.conf", "usr/src/x/y/dkms.conf"])), ["a-1"]);
    }

    #[test]
    fn build_files_are_the_makefiles_below_the_source() {
        let list = files(&[
            "usr/src/a-1/",
            "usr/src/a-1/Makefile",
            "usr/src/a-1/src/Kbuild",
            "usr/src/a-1/common.mk",
            "usr/src/a-1/Makefile.inc",
            "usr/src/a-1/a.c",
            "usr/src/b-1/Makefile",
        ]);
        assert_eq!(
            build_files(&list, "a-1"),
            ["usr/src/a-1/Makefile", "usr/src/a-1/src/Kbuild", "usr/src/a-1/common.mk", "usr/src/a-1/Makefile.inc"]
        );
    }

    #[test]
    fn dkms_conf_findings() {
        let with = |f: &dyn Fn(&mut DkmsConf)| {
            let mut c = conf("a", "1.0");
            f(&mut c);
            Ok(c)
        };
        for (dir, conf, pkgver, want) in [
            ("a-1.0", Ok(conf("a", "1.0")), "1.0", &[][..]),
            (
                "a-1.0",
                Err("usr/src/a-1.0/dkms.conf: PACKAGE_VERSION is empty".to_owned()),
                "1.0",
                &["dkms-conf-unreadable"],
            ),
            ("a-1.0", Ok(conf("a", "1.1")), "1.1", &["dkms-conf-wrong-directory"]),
            ("a-1.0", Ok(conf("b", "1.0")), "1.0", &["dkms-conf-wrong-directory"]),
            ("a-1.0", Ok(conf("a", "1.0")), "1.0.r5.gabc", &["package-version-differs"]),
            ("a-1.0", with(&|c| c.built_module_names = vec![]), "1.0", &["no-built-module-name"]),
            ("a-1.0", with(&|c| c.built_module_names = vec!["".into()]), "1.0", &["implicit-built-module-name"]),
            (
                "a-1.0",
                with(&|c| {
                    c.built_module_names = vec!["a".into(), "".into()];
                    c.dest_module_locations = vec!["/updates".into(), "/extra".into()];
                }),
                "1.0",
                &["no-built-module-name"],
            ),
            ("a-1.0", with(&|c| c.built_module_names = vec!["a.ko".into()]), "1.0", &["built-module-name-suffix"]),
            ("a-1.0", with(&|c| c.dest_module_locations = vec!["".into()]), "1.0", &["bad-dest-module-location"]),
            ("a-1.0", with(&|c| c.dest_module_locations = vec!["/misc".into()]), "1.0", &["bad-dest-module-location"]),
            ("a-1.0", with(&|c| c.dest_module_locations = vec!["/kernel/drivers/net".into()]), "1.0", &[]),
            (
                "a-1.0",
                with(&|c| c.deprecated = vec!["REMAKE_INITRD".into(), "OBSOLETE_BY".into()]),
                "1.0",
                &["deprecated-dkms-conf-option", "deprecated-dkms-conf-option"],
            ),
        ] {
            let found = dkms_conf(&source(dir, conf.clone()), pkgver);
            assert_eq!(tags(&found), want, "{conf:?} in {dir}, pkgver {pkgver}");
        }
        let found = dkms_conf(&source("a-1.0", with(&|c| c.deprecated = vec!["OBSOLETE_BY".into()])), "1.0");
        assert!(found[0].message.contains("sets OBSOLETE_BY") && found[0].fix.contains("BUILD_EXCLUSIVE_KERNEL_MAX"));
        let found = dkms_conf(&source("a-1.0", Ok(conf("a", "1.1"))), "1.1");
        assert!(found[0].message.contains("looks for the sources in usr/src/a-1.1, not usr/src/a-1.0"), "{found:?}");
    }

    #[test]
    fn running_kernel_findings() {
        let mut src = source("a-1.0", Ok(conf("a", "1.0")));
        src.conf_text = "PACKAGE_NAME=a\nMAKE[0]=\"make -C /lib/modules/$(uname -r)/build\"\n".into();
        src.build_files = vec![
            (
                "usr/src/a-1.0/Makefile".into(),
                "KDIR ?= /lib/modules/$(shell uname -r)/build\nall:\n\t$(MAKE) -C $(KDIR) M=$(CURDIR) modules\n".into(),
            ),
            ("usr/src/a-1.0/Kbuild".into(), "KV := $(shell uname -r)\nccflags-y += -DKV=$(KV)\nobj-m := a.o\n".into()),
            ("usr/src/a-1.0/x.mk".into(), "all:\n\tmake -C /lib/modules/`uname -r`/build\n".into()),
        ];
        let found = running_kernel(&src);
        let places: Vec<&str> = found.iter().map(|f| f.message.split(" uses ").next().unwrap()).collect();
        // KDIR is passed by MAKE (see `conf`): the Makefile's own value is never used.
        assert_eq!(
            places,
            ["usr/src/a-1.0/dkms.conf line 2", "usr/src/a-1.0/Kbuild line 1", "usr/src/a-1.0/x.mk line 2"]
        );
        assert!(found.iter().all(|f| f.tag == Tag::BuildsForRunningKernel));
        assert!(found[1].fix.starts_with("pass KV=$kernelver on make's command line"), "{}", found[1].fix);
        // A directory variable MAKE does not pass gets the headers.
        src.conf = Ok(DkmsConf { make: vec!["make all".into()], ..conf("a", "1.0") });
        let found = running_kernel(&src);
        assert!(found[1].fix.starts_with("pass KDIR=${kernel_source_dir} on make's command line"), "{found:?}");
        // Without MAKE, a Makefile's fallback cannot be told from what the build uses.
        src.conf = Err("dkms.conf: syntax error".into());
        let found = running_kernel(&src);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.starts_with("usr/src/a-1.0/dkms.conf line 2"), "{found:?}");
    }

    /// Debian's acpi-call-dkms 1.2.2: MAKE goes straight to kbuild, which never uses the Makefile's
    /// `uname -r` (it builds and loads for every kernel); the same Makefile run as the build's own
    /// Makefile builds for the running kernel.
    #[test]
    fn running_kernel_only_where_the_build_uses_it() {
        const ACPI_CALL_MAKEFILE: &str = "obj-m := acpi_call.o\n\nKVER ?= $(shell uname -r)\n\
            KDIR ?= /lib/modules/$(KVER)/build\nVERSION ?= $(shell cat VERSION)\n\ndefault:\n\
            \t$(MAKE) -C $(KDIR) M=$(CURDIR) modules\n\nclean:\n\t$(MAKE) -C $(KDIR) M=$(CURDIR) clean\n\n\
            load:\n\t-/sbin/rmmod acpi_call\n\t/sbin/insmod acpi_call.ko\n";
        let with_make = |make: &str, makefile: &str| {
            let mut src =
                source("acpi-call-1.2.2", Ok(DkmsConf { make: vec![make.into()], ..conf("acpi-call", "1.2.2") }));
            src.build_files = vec![("usr/src/acpi-call-1.2.2/Makefile".into(), makefile.into())];
            running_kernel(&src)
        };
        // dkms.conf as lint reads it (${kernel_source_dir} empty) and as written.
        for make in [
            "make -C  M=/var/lib/dkms/acpi-call/1.2.2/build",
            "make -C ${kernel_source_dir} M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build",
            "make -C /lib/modules//build M=/var/lib/dkms/acpi-call/1.2.2/build modules",
        ] {
            assert_eq!(with_make(make, ACPI_CALL_MAKEFILE), [], "{make}");
        }
        // The module's own Makefile runs: its default goal builds against KDIR from KVER.
        for make in ["make", "make default", "make -C src M=x"] {
            let found = with_make(make, ACPI_CALL_MAKEFILE);
            assert_eq!(found.len(), 1, "{make}: {found:?}");
            assert!(
                found[0].message.contains("Makefile line 3 uses `uname -r` (KVER ?= $(shell uname -r))"),
                "{found:?}"
            );
        }
        // ... unless MAKE passes the directory the value leads to.
        assert_eq!(with_make("make KDIR=/usr/lib/modules/6.1/build", ACPI_CALL_MAKEFILE), []);
        // With kbuild alone, what kbuild reads still counts.
        let flags = "KVER ?= $(shell uname -r)\nccflags-y += -DKVER=$(KVER)\nobj-m := a.o\n";
        assert_eq!(with_make("make -C ${kernel_source_dir} M=x", flags).len(), 1);
        let inline = "obj-m := a.o\nccflags-y += -DK=$(shell uname -r)\n";
        assert_eq!(with_make("make -C ${kernel_source_dir} M=x", inline).len(), 1);
        // A recipe runs only when the module's Makefile is make's own.
        let recipe = "all:\n\t$(MAKE) -C /lib/modules/`uname -r`/build M=$(PWD)\n";
        assert_eq!(with_make("make -C ${kernel_source_dir} M=x", recipe), []);
        assert_eq!(with_make("make all", recipe).len(), 1);
    }

    #[test]
    fn dependency_findings() {
        let package = |deps: &[&str]| Package {
            path: "p.pkg.tar.zst".into(),
            name: "a-dkms".into(),
            version: "1.0-1".into(),
            depends: deps
                .iter()
                .map(|d| Dependency { name: d.split(['>', '<', '=']).next().unwrap().into(), text: d.to_string() })
                .collect(),
            files: vec![],
            has_install: false,
        };
        for (deps, want) in [
            (&["dkms"][..], &[][..]),
            (&["dkms>=3", "bc"], &[]),
            (&[], &["dkms-missing-dependency"]),
            (&["dkms-git"], &["dkms-missing-dependency"]),
            (&["dkms", "linux-headers"], &["hard-headers-dependency"]),
            (&["linux-lts-headers>=6.6", "dkms"], &["hard-headers-dependency"]),
        ] {
            assert_eq!(tags(&dependencies(&package(deps))), want, "{deps:?}");
        }
    }

    #[test]
    fn scriptlet_findings() {
        for (text, want) in [
            ("", &["scriptlet-unneeded"][..]),
            ("# nothing\npost_install() {\n  :\n}\n", &["scriptlet-unneeded"]),
            (
                "post_install() {\n  echo 'reboot to use it'\n}\npost_upgrade() {\n  post_install\n}\n",
                &["scriptlet-unneeded"],
            ),
            ("post_install() {\n  echo 'reboot to use it'\n}\npost_upgrade() {\n  other_tool\n}\n", &[]),
            ("post_install() {\n  echo 'reboot to use it'\n  return 0\n}\n", &["scriptlet-unneeded"]),
            (
                "post_install() {\n  dkms install a/1.0\n}\npre_remove() {\n  dkms remove a/1.0 --all\n}\n",
                &["scriptlet-runs-module-tools"],
            ),
            (
                "post_install() {\n  depmod -a\n  modprobe a\n}\n",
                &["scriptlet-runs-module-tools", "scriptlet-runs-module-tools"],
            ),
            (
                "post_install() {\n  rmmod a; insmod /x/a.ko\n}\n",
                &["scriptlet-runs-module-tools", "scriptlet-runs-module-tools"],
            ),
            ("post_install() {\n  systemctl daemon-reload\n}\n", &[]),
        ] {
            assert_eq!(tags(&install_scriptlet(text)), want, "{text}");
        }
        let found = install_scriptlet("post_install() {\n  dkms add a/1\n  dkms build a/1\n}\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("runs dkms (lines 2, 3)"), "{}", found[0].message);
        let found = install_scriptlet("post_install() {\n  modprobe a\n}\n");
        assert!(found[0].message.contains("runs modprobe (line 2)"), "{}", found[0].message);
    }
}
