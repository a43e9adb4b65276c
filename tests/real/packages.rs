//! The packages the real tier installs: Arch-style kernel packages made from Debian's kernel images
//! (the real `vmlinuz`, the in-tree modules the tests need, `modules.order`, `modules.builtin*`,
//! `pkgbase`) and headers packages made from Debian's kernel headers, `*-dkms` packages made from the
//! sources in `tests/real/modules/` and from real-world Debian module packages (fetched by
//! scripts/setup into `.deps/debian/`, never committed), file-less stand-ins such as `dkms` (what the
//! `*-dkms` and dkms-hook packages depend on; the root has the real dkms from the host), and dkms-hook itself as its
//! PKGBUILD builds it.
//!
//! Packages are assembled by `scripts/lib/overlay-root.sh` (shared with `scripts/demo`), once per
//! test process, into `target/tmp/real-packages-<pid>/`; the first use in a process deletes the
//! directories of test processes that are gone. The crates the dkms-hook package build fetches stay
//! in `target/tmp/makepkg-cargo-home/` for the next process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{shell, Dkms, REPO};

/// An installed kernel: the `linux`-style package (Debian's kernel image of `kver`, bootable by the
/// boot check) and its `-headers` package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel package's name, also its pkgbase.
    pub name: &'static str,
    /// pkgver-pkgrel of both packages.
    pub version: &'static str,
    /// The module directory name, `usr/lib/modules/<kver>` (a Debian kernel with headers here).
    pub kver: &'static str,
    /// Whether the package's own modules are `.ko.zst`, as Arch's kernels ship them (Debian's
    /// are plain `.ko`).
    pub zst: bool,
}

/// The amd64 kernel as package `linux`: it has the media drivers (`videodev`) v4l2loopback needs.
pub const LINUX: Kernel = Kernel { name: "linux", version: "6.1.0.47-1", kver: "6.1.0-47-amd64", zst: false };
/// The cloud kernel as package `linux-cloud`: built without media drivers (no `CONFIG_VIDEO_DEV`), so
/// v4l2loopback's dkms.conf excludes it (BUILD_EXCLUSIVE).
pub const LINUX_CLOUD: Kernel =
    Kernel { name: "linux-cloud", version: "6.1.0.47-1", kver: "6.1.0-47-cloud-amd64", zst: false };
/// `linux` rebuilt under the same kver (a pkgrel bump): an upgrade in place of
/// `usr/lib/modules/<kver>/`.
pub const LINUX_REL2: Kernel = Kernel { version: "6.1.0.47-2", ..LINUX };
/// The header file the rebuilt headers of [`Pkg::RebuiltHeaders`] add; [`OLDAPI`] refuses to
/// build where it exists.
pub const CHANGED_API: &str = "dkms_hook_rebuilt.h";
/// The next version of `linux`: an upgrade that changes the kver (to the rt kernel's headers).
pub const LINUX_NEXT: Kernel = Kernel { name: "linux", version: "6.1.0.48-1", kver: "6.1.0-47-rt-amd64", zst: false };
/// [`LINUX`] with its own modules compressed with zstd, as Arch's `linux` ships them.
pub const LINUX_ZST: Kernel = Kernel { zst: true, ..LINUX };
/// [`LINUX_NEXT`] with its own modules compressed with zstd.
pub const LINUX_NEXT_ZST: Kernel = Kernel { zst: true, ..LINUX_NEXT };

impl Kernel {
    pub fn pkg(self) -> Pkg {
        Pkg::Kernel(self)
    }

    /// The headers package (the same for a `zst` kernel: headers hold no modules).
    pub fn headers(self) -> Pkg {
        Pkg::Headers(Kernel { zst: false, ..self })
    }

    pub fn headers_name(self) -> String {
        format!("{}-headers", self.name)
    }
}

/// A `*-dkms` package: one dkms module/version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// The package name.
    pub package: &'static str,
    /// pkgver-pkgrel.
    pub version: &'static str,
    /// The source directory under `tests/real/modules/`, or `debian:PACKAGE` for the sources
    /// (`usr/src/<name>-<modver>/`) of a Debian package that scripts/setup unpacked into
    /// `.deps/debian/PACKAGE/`.
    pub source: &'static str,
    /// dkms's PACKAGE_NAME.
    pub name: &'static str,
    /// dkms's PACKAGE_VERSION; the package ships `usr/src/<name>-<modver>/`.
    pub modver: &'static str,
    /// BUILT_MODULE_NAME: the `.ko` file's stem.
    pub ko: &'static str,
}

macro_rules! dkms_module {
    ($name:literal, $modver:literal, $version:literal, $ko:literal) => {
        Module {
            package: concat!($name, "-dkms"),
            version: $version,
            source: $name,
            name: $name,
            modver: $modver,
            ko: $ko,
        }
    };
}

/// A plain module.
pub const HELLO_1_0: Module = dkms_module!("hello", "1.0", "1.0-1", "hello");
/// Its next version, in a new directory `usr/src/hello-1.1/`.
pub const HELLO_1_1: Module = dkms_module!("hello", "1.1", "1.1-1", "hello");
/// A pkgrel bump of 1.1: the same directory, new source (`modinfo -F pkgrel` says 2).
pub const HELLO_1_1_REL2: Module = dkms_module!("hello", "1.1", "1.1-2", "hello");
/// A new version of hello that does not compile.
pub const HELLO_1_1_BROKEN: Module = Module { source: "hello-broken", ..HELLO_1_1 };
/// The version after that, which compiles.
pub const HELLO_1_2: Module = dkms_module!("hello", "1.2", "1.2-1", "hello");
/// A package release of hello 1.0 (same directory) whose changed sources do not compile.
pub const HELLO_1_0_REL2_BROKEN: Module = Module { version: "1.0-2", source: "hello-broken", ..HELLO_1_0 };
/// The release after that, which compiles (`modinfo -F pkgrel` says 3).
pub const HELLO_1_0_REL3: Module = dkms_module!("hello", "1.0", "1.0-3", "hello");
/// hello 1.0 from sources without the package release in them: its releases 1 and 2 are
/// byte-identical.
pub const HELLO_SAME_REL1: Module =
    Module { package: "hello-dkms", version: "1.0-1", source: "hello-same", name: "hello", modver: "1.0", ko: "hello" };
/// See [`HELLO_SAME_REL1`].
pub const HELLO_SAME_REL2: Module = Module { version: "1.0-2", ..HELLO_SAME_REL1 };
/// Hyphens in both name and version (the stock hook splits `NAME-VERSION` at the last one).
pub const XPAD: Module = dkms_module!("xpad-neo-x", "0.9-r12-g3a1b", "0.9.r12.g3a1b-1", "xpadneox");
/// BUILD_DEPENDS on ZETA: its build fails unless zeta-base was built for the kernel first.
pub const ALPHA: Module = dkms_module!("alpha-user", "1.0", "1.0-1", "alphauser");
/// The dependency of ALPHA (sorts after it by name).
pub const ZETA: Module = dkms_module!("zeta-base", "1.0", "1.0-1", "zetabase");
/// BUILD_EXCLUSIVE_KERNEL="^.*-cloud-amd64$".
pub const CLOUDONLY: Module = dkms_module!("cloudonly", "1.0", "1.0-1", "cloudonly");
/// Does not compile.
pub const BROKEN: Module = dkms_module!("broken", "1.0", "1.0-1", "broken");
/// Builds against the test kernels' headers as packaged, not against headers rebuilt with
/// [`CHANGED_API`].
pub const OLDAPI: Module = dkms_module!("oldapi", "1.0", "1.0-1", "oldapi");
/// Builds for the amd64 and cloud kernels, not for the rt kernel ([`LINUX_NEXT`]'s kver).
pub const RTFAIL: Module = dkms_module!("rtfail", "1.0", "1.0-1", "rtfail");
/// Its dkms.conf builds against `/lib/modules/$kernelver/build`, not `${kernel_source_dir}`.
pub const LIBMOD: Module = dkms_module!("libmod", "1.0", "1.0-1", "libmod");
/// Its Makefile always builds for the amd64 kernel, whatever dkms asks (a `uname -r` Makefile).
pub const UNAMEMOD: Module = dkms_module!("unamemod", "1.0", "1.0-1", "unamemod");
/// Debian's v4l2loopback-dkms 0.12.7-2 as an Arch package: the module depends on the in-tree
/// `videodev` (and `mc`), creates `/dev/video0` when it loads, and its dkms.conf excludes kernels
/// without `CONFIG_VIDEO_DEV` (the cloud kernel). Its Makefile falls back to `uname -r` for KERNELRELEASE.
pub const V4L2LOOPBACK: Module = Module {
    package: "v4l2loopback-dkms",
    version: "0.12.7-2",
    source: "debian:v4l2loopback-dkms",
    name: "v4l2loopback",
    modver: "0.12.7",
    ko: "v4l2loopback",
};
/// Debian's acpi-call-dkms 1.2.2 as an Arch package: MAKE[0] is `make -C ${kernel_source_dir}
/// M=…`, while its Makefile has `KVER ?= $(shell uname -r)` (which kbuild never uses).
pub const ACPI_CALL: Module = Module {
    package: "acpi-call-dkms",
    version: "1.2.2-2",
    source: "debian:acpi-call-dkms",
    name: "acpi-call",
    modver: "1.2.2",
    ko: "acpi_call",
};
/// The real-world modules, nobody here wrote them.
pub const REAL_WORLD: &[Module] = &[V4L2LOOPBACK, ACPI_CALL];

impl Module {
    pub fn pkg(self) -> Pkg {
        Pkg::Module(self)
    }

    /// The directory whose files the package ships in `usr/src/<name>-<modver>/`.
    pub fn source_dir(self) -> PathBuf {
        match self.source.strip_prefix("debian:") {
            Some(package) => debian_dir().join(package).join("usr/src").join(format!("{}-{}", self.name, self.modver)),
            None => Path::new(REPO).join("tests/real/modules").join(self.source),
        }
    }
}

/// Where scripts/setup unpacks the Debian packages the tier uses (kernel images, module packages).
pub fn debian_dir() -> PathBuf {
    Path::new(REPO).join(".deps/debian")
}

/// One package file to give `pacman -U`.
#[derive(Clone, Copy, Debug)]
pub enum Pkg {
    Kernel(Kernel),
    Headers(Kernel),
    /// The headers of a kernel rebuilt under the same kver: with `Some(header)` that file is
    /// added below `build/include/linux/` (a changed interface), with `None` they are
    /// byte-identical to [`Pkg::Headers`]'s.
    RebuiltHeaders(Kernel, Option<&'static str>),
    Module(Module),
    /// The file-less `dkms` package for this dkms.
    DkmsStub(Dkms),
    /// A file-less package NAME VERSION, standing in for what the root has from the host.
    Stub(&'static str, &'static str),
    /// A module package with one more `depends` entry (e.g. `nvidia-utils=590-1`).
    Depending(Module, &'static str),
    /// Package NAME VERSION holding the files below `tests/real/DIR` (e.g. a stand-in generator).
    Tree(&'static str, &'static str, &'static str),
    /// dkms-hook, built by makepkg (as nobody) from a clean clone of the repository's HEAD.
    DkmsHook,
    /// `filesystem`, a stand-in for the start of `base` in a new root: the usr-merge links and a
    /// static busybox as `/bin/sh`.
    Base,
    /// Package NAME VERSION holding the files of the Debian packages that scripts/setup unpacked
    /// into `.deps/debian/` (e.g. the real dracut), laid out as Arch lays out its packages.
    Debian(&'static str, &'static str, &'static [&'static str]),
}

impl Pkg {
    /// The package file, built on first use in this process.
    pub fn file(self) -> PathBuf {
        static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
        let key = format!("{self:?}");
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        let built = built.get_or_insert_with(|| {
            remove_stale_dirs();
            std::fs::create_dir_all(out_dir()).expect("cannot create the package directory");
            HashMap::new()
        });
        if let Some(file) = built.get(&key) {
            return file.clone();
        }
        let out = out_dir();
        let out = out.to_str().unwrap();
        let output = match self {
            // The same name and version as the plain package: a directory of its own.
            Pkg::Kernel(k) if k.zst => {
                let dir = format!("{out}/zst");
                std::fs::create_dir_all(&dir).expect("cannot create the package directory");
                shell("pkg_kernel", &[&dir, k.name, k.version, k.kver, "zst"])
            }
            Pkg::Kernel(k) => shell("pkg_kernel", &[out, k.name, k.version, k.kver]),
            Pkg::Headers(k) => shell("pkg_headers", &[out, &k.headers_name(), k.name, k.version, k.kver]),
            Pkg::RebuiltHeaders(k, header) => {
                shell("pkg_headers", &[out, &k.headers_name(), k.name, k.version, k.kver, header.unwrap_or_default()])
            }
            Pkg::Module(m) => {
                let src = m.source_dir();
                shell("pkg_dkms", &[out, m.package, m.version, src.to_str().unwrap(), m.name, m.modver])
            }
            Pkg::Depending(m, depend) => {
                let src = Path::new(REPO).join("tests/real/modules").join(m.source);
                shell("pkg_dkms", &[out, m.package, m.version, src.to_str().unwrap(), m.name, m.modver, depend])
            }
            Pkg::Tree(name, version, dir) => {
                let dir = Path::new(REPO).join("tests/real").join(dir);
                shell("pkg_tree", &[out, name, version, dir.to_str().unwrap()])
            }
            Pkg::Debian(name, version, debs) => {
                let mut args = vec![out, name, version];
                args.extend_from_slice(debs);
                shell("pkg_debian", &args)
            }
            Pkg::DkmsStub(dkms) => shell("pkg_stub", &[out, "dkms", dkms.package_version()]),
            Pkg::Stub(name, version) => shell("pkg_stub", &[out, name, version]),
            Pkg::Base => shell("pkg_base", &[out]),
            Pkg::DkmsHook => {
                let started = std::time::Instant::now();
                let cargo_home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("makepkg-cargo-home");
                let ran = shell("pkg_dkms_hook", &[out, REPO, cargo_home.to_str().unwrap()]);
                println!("makepkg built the dkms-hook package in {:.0}s", started.elapsed().as_secs_f64());
                ran
            }
        };
        assert!(output.status.success(), "cannot build package {key}:\n{}", output.text());
        let file = PathBuf::from(output.text().lines().last().unwrap_or_default().trim());
        assert!(file.is_file(), "building {key} printed no package file:\n{}", output.text());
        built.insert(key, file.clone());
        file
    }
}

/// dkms-hook's PKGBUILD, relative to the repository.
pub const PKGBUILD: &str = "packaging/arch/PKGBUILD";

/// A variable the PKGBUILD assigns at the start of a line (`pkgver=0.1.0`).
pub fn pkgbuild_var(name: &str) -> String {
    let text = std::fs::read_to_string(Path::new(REPO).join(PKGBUILD)).unwrap();
    let prefix = format!("{name}=");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{PKGBUILD} has no {name}")).to_owned()
}

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("real-packages-{}", std::process::id()))
}

/// Deletes the package directories of test processes that no longer run (or of an earlier process
/// that had this one's pid).
fn remove_stale_dirs() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for name in super::list(tmp) {
        let Some(pid) = name.strip_prefix("real-packages-") else {
            continue;
        };
        if pid == std::process::id().to_string() || !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(tmp.join(&name));
        }
    }
}
