//! What `lint` can say about a package: a [`Finding`] has a level, a stable tag, what is wrong and
//! how to fix it. Every tag the code can emit is in [`Tag::ALL`]; `dkms-hook lint --help` (and so
//! dkms-hook-lint(8)) documents each one, and a test keeps the two in step.

use std::fmt;

use serde::Serialize;

/// How bad a finding is: an error makes `lint` exit 1, a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Error,
    Warning,
}

impl Level {
    pub fn word(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
        }
    }
}

/// Defines [`Tag`] with its name and level, and [`Tag::ALL`], from one table: no tag can be
/// added without being listed.
macro_rules! tags {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $level:ident;)+) => {
        /// A kind of finding, named by a stable tag.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Tag {
            $($(#[$doc])* $variant,)+
        }

        impl Tag {
            /// Every tag, in the order of the documentation.
            pub const ALL: &[Tag] = &[$(Tag::$variant,)+];

            /// The tag as printed: short, lowercase, hyphenated.
            pub fn name(self) -> &'static str {
                match self {
                    $(Tag::$variant => $name,)+
                }
            }

            pub fn level(self) -> Level {
                match self {
                    $(Tag::$variant => Level::$level,)+
                }
            }
        }
    };
}

tags! {
    /// No `usr/src/NAME-VERSION/dkms.conf` at all: not a DKMS package.
    NoDkmsConf = "no-dkms-conf", Error;
    /// A dkms.conf somewhere dkms never looks.
    DkmsConfMisplaced = "dkms-conf-misplaced", Error;
    /// bash cannot source the dkms.conf, or it lacks a valid PACKAGE_NAME/PACKAGE_VERSION.
    DkmsConfUnreadable = "dkms-conf-unreadable", Error;
    /// PACKAGE_NAME-PACKAGE_VERSION is not the directory's name.
    DkmsConfWrongDirectory = "dkms-conf-wrong-directory", Error;
    /// PACKAGE_VERSION is not the package's pkgver.
    PackageVersionDiffers = "package-version-differs", Warning;
    /// A module record has no BUILT_MODULE_NAME, or there is no module record at all.
    NoBuiltModuleName = "no-built-module-name", Error;
    /// The only module record leaves BUILT_MODULE_NAME to dkms's default (PACKAGE_NAME).
    ImplicitBuiltModuleName = "implicit-built-module-name", Warning;
    /// BUILT_MODULE_NAME ends in `.ko` or `.o`.
    BuiltModuleNameSuffix = "built-module-name-suffix", Error;
    /// DEST_MODULE_LOCATION is unset or outside /kernel, /updates, /extra.
    BadDestModuleLocation = "bad-dest-module-location", Error;
    /// An option dkms 3 deprecates (and ignores, or maps to another).
    DeprecatedOption = "deprecated-dkms-conf-option", Warning;
    /// `dkms` is not in depends.
    DkmsMissingDependency = "dkms-missing-dependency", Error;
    /// A kernel headers package is a hard dependency.
    HardHeadersDependency = "hard-headers-dependency", Warning;
    /// The install scriptlet runs dkms, depmod, modprobe, insmod or rmmod.
    ScriptletRunsModuleTools = "scriptlet-runs-module-tools", Error;
    /// The install scriptlet is empty or only prints.
    ScriptletUnneeded = "scriptlet-unneeded", Warning;
    /// The build uses `uname -r`: the running kernel, not the one dkms builds for.
    BuildsForRunningKernel = "builds-for-running-kernel", Warning;
    /// `--build`: the module did not build for a kernel.
    BuildFailed = "build-failed", Error;
    /// `--build`: a built module's vermagic names another kernel.
    BuildWrongKernel = "build-wrong-kernel", Error;
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Tag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// One problem found in a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    pub tag: Tag,
    /// What is wrong, naming the file, line or value.
    pub message: String,
    /// How to fix it.
    pub fix: String,
    /// Lines that show the problem (a failed build's first compiler error and log tail).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl Finding {
    /// A finding of `tag` (at its level).
    pub fn new(tag: Tag, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { level: tag.level(), tag, message: message.into(), fix: fix.into(), details: Vec::new() }
    }

    /// The same finding with lines that show the problem.
    pub fn with_details(mut self, details: Vec<String>) -> Finding {
        self.details = details;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `LEVEL TAG` lines of the documentation, in order.
    fn documented() -> Vec<(String, String)> {
        crate::cli::LINT_FINDINGS
            .lines()
            .filter(|l| l.starts_with("error ") || l.starts_with("warning "))
            .map(|l| {
                let (level, tag) = l.split_once(' ').unwrap();
                (level.to_owned(), tag.trim().to_owned())
            })
            .collect()
    }

    #[test]
    fn every_tag_is_documented_with_its_level_and_a_fix() {
        let documented = documented();
        let code: Vec<(String, String)> =
            Tag::ALL.iter().map(|t| (t.level().word().to_owned(), t.name().to_owned())).collect();
        assert_eq!(documented, code, "cli::LINT_FINDINGS must list exactly Tag::ALL, in order, with their levels");
        // Each entry explains itself and names a fix in its indented lines.
        let text = crate::cli::LINT_FINDINGS;
        for tag in Tag::ALL {
            let start = text.find(&format!("{} {}\n", tag.level().word(), tag.name())).unwrap();
            let body: String = text[start..].lines().skip(1).take_while(|l| l.starts_with("    ")).collect();
            assert!(body.contains("Fix:"), "{tag}: no `Fix:` in its documentation");
        }
    }

    #[test]
    fn tags_are_unique_short_and_lowercase() {
        let mut names: Vec<&str> = Tag::ALL.iter().map(|t| t.name()).collect();
        assert!(names.iter().all(|n| n.len() <= 30 && n.chars().all(|c| c.is_ascii_lowercase() || c == '-')));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Tag::ALL.len());
    }
}
