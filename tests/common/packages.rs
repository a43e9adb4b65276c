//! Package files assembled by hand for `lint`'s tests: a staging directory with the package's files
//! (and `.INSTALL`), packed by `pkg_write` of `scripts/lib/overlay-root.sh` (the helper the real
//! tier and `scripts/demo` use), which writes `.PKGINFO` and runs `bsdtar --zstd`.
//!
//! [`dkms_package`] is a complete, clean `*-dkms` package; a test changes one thing of it to make
//! one defect.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository, for the shell helper and the example package.
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A package to assemble.
#[derive(Debug, Clone)]
pub struct PackageSpec {
    pub name: String,
    /// pkgver-pkgrel.
    pub version: String,
    pub depends: Vec<String>,
    /// Files by package path (no leading `/`), with their content.
    pub files: Vec<(String, String)>,
    /// The install scriptlet.
    pub install: Option<String>,
}

/// The dkms.conf of [`dkms_package`]: the example package's, for module `name` `version`.
pub fn clean_dkms_conf(name: &str, version: &str) -> String {
    format!(
        "PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"{version}\"\nBUILT_MODULE_NAME[0]=\"{name}\"\n\
         DEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nMAKE[0]=\"make KDIR=${{kernel_source_dir}} all\"\nAUTOINSTALL=\"yes\"\n"
    )
}

/// The Makefile of [`dkms_package`]: builds for the headers dkms passes as KDIR.
pub const CLEAN_MAKEFILE: &str =
    "obj-m := hello.o\nKDIR ?= /lib/modules/$(shell uname -r)/build\nall:\n\t$(MAKE) -C $(KDIR) M=$(CURDIR) modules\n";

/// `NAME-dkms` `VERSION-1` shipping `usr/src/NAME-VERSION/` (dkms.conf, Makefile, a C file) and
/// depending on dkms: nothing for `lint` to find. The Makefile's `uname -r` is a fallback that
/// MAKE overrides (KDIR=…), as in many real packages.
pub fn dkms_package(name: &str, version: &str) -> PackageSpec {
    let dir = format!("usr/src/{name}-{version}");
    PackageSpec {
        name: format!("{name}-dkms"),
        version: format!("{version}-1"),
        depends: vec!["dkms".into()],
        files: vec![
            (format!("{dir}/dkms.conf"), clean_dkms_conf(name, version)),
            (format!("{dir}/Makefile"), CLEAN_MAKEFILE.into()),
            (format!("{dir}/{name}.c"), "#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n".into()),
        ],
        install: None,
    }
}

impl PackageSpec {
    /// The content of the file at `path`; panics if there is none.
    pub fn file_mut(&mut self, path: &str) -> &mut String {
        &mut self.files.iter_mut().find(|(p, _)| p == path).unwrap_or_else(|| panic!("no {path} in the package")).1
    }

    /// Packs the package into `out`; returns the package file.
    pub fn write(&self, out: &Path) -> PathBuf {
        let stage = tempfile::Builder::new().prefix("dkms-hook-stage.").tempdir().unwrap();
        fs::set_permissions(stage.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for (path, content) in &self.files {
            let file = stage.path().join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(&file, content).unwrap();
        }
        if let Some(install) = &self.install {
            fs::write(stage.path().join(".INSTALL"), install).unwrap();
        }
        let mut args =
            vec![out.to_str().unwrap(), stage.path().to_str().unwrap(), &self.name, &self.name, &self.version];
        args.extend(self.depends.iter().map(String::as_str));
        helper("pkg_write", &args)
    }
}

/// A `*-dkms` package of a module of the real tier (`tests/real/modules/NAME`), version
/// `MODVER-1`, made by `pkg_dkms`.
pub fn real_module_package(out: &Path, name: &str, modver: &str) -> PathBuf {
    let source = Path::new(REPO).join("tests/real/modules").join(name);
    let version = format!("{modver}-1");
    helper(
        "pkg_dkms",
        &[out.to_str().unwrap(), &format!("{name}-dkms"), &version, source.to_str().unwrap(), name, modver],
    )
}

/// Runs a package function of `scripts/lib/overlay-root.sh` that prints the package file it
/// wrote into `args[0]`.
fn helper(function: &str, args: &[&str]) -> PathBuf {
    fs::create_dir_all(args[0]).unwrap();
    let output = Command::new("bash")
        .arg("-c")
        .arg(r#". "$0" && "$@""#)
        .arg(Path::new(REPO).join("scripts/lib/overlay-root.sh"))
        .arg(function)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{function} failed: {}", String::from_utf8_lossy(&output.stderr));
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// `examples/hello-dkms` packaged the way makepkg does it, without makepkg: its PKGBUILD's
/// `package()` runs with `srcdir` the example directory, into a fresh `pkgdir`, and its
/// `pkgname`, `pkgver`, `pkgrel` and `depends` go into `.PKGINFO`. Returns the package file in
/// `out`.
pub fn example_package(out: &Path) -> PathBuf {
    let example = Path::new(REPO).join("examples/hello-dkms");
    let pkgdir = tempfile::Builder::new().prefix("dkms-hook-pkgdir.").tempdir().unwrap();
    fs::set_permissions(pkgdir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let script = r#"set -e
source ./PKGBUILD
srcdir=$PWD pkgdir=$1
umask 022
package
printf '%s\n' "$pkgname" "$pkgver-$pkgrel" "${depends[@]}"
"#;
    let output =
        Command::new("bash").args(["-c", script, "package"]).arg(pkgdir.path()).current_dir(&example).output().unwrap();
    assert!(output.status.success(), "package() failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines = text.lines();
    let (name, version) = (lines.next().unwrap().to_owned(), lines.next().unwrap().to_owned());
    let depends: Vec<String> = lines.map(str::to_owned).collect();
    let mut files = Vec::new();
    collect(pkgdir.path(), pkgdir.path(), &mut files);
    PackageSpec { name, version, depends, files, install: None }.write(out)
}

/// Every file below `dir`, by its path relative to `base`.
fn collect(base: &Path, dir: &Path, into: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(base, &path, into);
        } else {
            let rel = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            into.push((rel, fs::read_to_string(&path).unwrap()));
        }
    }
}
