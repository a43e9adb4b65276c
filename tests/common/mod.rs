//! The shared test environment of the integration tests (the shape of fd's `tests/testenv`).
//!
//! A [`TestRoot`] is a temporary directory holding a fixture root `R` — a local pacman database that
//! libalpm 16 reads, kernel, headers and module-source packages with their files on disk, and a dkms
//! tree — plus two recording fakes, `fake-dkms` and `fake-depmod` (shell scripts next to this file).
//! [`TestRoot::run`] drives the real `dkms-hook` binary against `R` with `--root R` and the fakes as
//! `--dkms`/`--depmod`, and returns its exit status, its output and the fakes' calls in order.
//!
//! The fakes change the dkms tree and the install tree the way dkms does (see `fake-dkms`), so tests
//! assert on three things: the key phrases of the output, the argv the binary gave dkms and depmod,
//! and the files in `R` afterwards. Both fakes refuse any path outside `R`: a missing relocation flag
//! fails the test instead of touching the host.
//!
//! A pacman transaction is simulated the way pacman orders it: PreTransaction hook (`remove`) while
//! the old packages are still in the database and on disk, then [`TestRoot::remove_package`] and the
//! builders for the new packages, then the PostTransaction hook (`install`).

#![allow(dead_code)]

pub mod packages;
pub mod skip;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// The machine name dkms puts in its tree (`kernel-K-ARCH`, `M/V/K/ARCH/`); the fake uses it.
pub const ARCH: &str = "x86_64";
/// A Debian-style kernel version, owned by `linux` in most fixtures.
pub const K1: &str = "6.1.0-47-amd64";
/// An Arch-style kernel version, owned by `linux-lts` in most fixtures.
pub const K2: &str = "6.6.30-1-lts";
/// The second Debian kernel with real headers on the test machine (scripts/setup installs them).
pub const K_CLOUD: &str = "6.1.0-47-cloud-amd64";

const FAKE_DKMS: &str = include_str!("fake-dkms");
const FAKE_DEPMOD: &str = include_str!("fake-depmod");

/// How long one run of the binary may take before the test kills it and fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A fixture root with a local pacman database, and the fakes that the binary runs.
pub struct TestRoot {
    tmp: TempDir,
    root: PathBuf,
    bin: PathBuf,
    calls_log: PathBuf,
}

/// The files of a headers package for `kver` (see [`TestRoot::headers`]).
pub fn headers_entries(kver: &str) -> Vec<(String, String)> {
    let b = format!("usr/lib/modules/{kver}/build");
    vec![
        (format!("{b}/"), String::new()),
        (format!("{b}/Makefile"), "# fake kernel Makefile\n".to_owned()),
        (format!("{b}/include/"), String::new()),
        (format!("{b}/include/generated/"), String::new()),
        (format!("{b}/include/generated/utsrelease.h"), format!("#define UTS_RELEASE \"{kver}\"\n")),
    ]
}

/// The files of a module package shipping `usr/src/DIR` (see [`TestRoot::module_pkg`]).
pub fn module_entries(dir: &str, dkms_conf: &str) -> Vec<(String, String)> {
    let s = format!("usr/src/{dir}");
    vec![
        (format!("{s}/"), String::new()),
        (format!("{s}/dkms.conf"), dkms_conf.to_owned()),
        (format!("{s}/Makefile"), "obj-m += fake.o\n".to_owned()),
    ]
}

/// `entries` as the `(&str, &str)` pairs [`TestRoot::package`] takes.
pub fn borrowed(entries: &[(String, String)]) -> Vec<(&str, &str)> {
    entries.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect()
}

// --- The guard's kernel upgrade: `linux` from K1 to K_NEW, offered as `pacman -Syu` has it. ---

/// The kver the offered kernel upgrade brings.
pub const K_NEW: &str = "6.2.0-1-arch";

/// The guard's private trees and extracted packages.
pub const PREBUILT: &str = "var/lib/dkms-hook/prebuilt";

pub fn headers_target(kver: &str) -> String {
    format!("usr/lib/modules/{kver}/build/include/\n")
}

/// `linux` at K1 with headers, and modules hello 1.0 and xpad 2.0 installed for it.
pub fn installed_system() -> TestRoot {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.module_pkg("xpad-dkms", "xpad-2.0", &dkms_conf("xpad", "2.0"));
    t.run(&["install"], "usr/src/hello-1.0/dkms.conf\nusr/src/xpad-2.0/dkms.conf\n").assert_code(0);
    assert_eq!(t.installed_for("hello", K1).as_deref(), Some("1.0"));
    t
}

/// Offers `linux` 2.0-1 at K_NEW with its headers, as `pacman -Syu` has them downloaded.
pub fn offer_kernel_upgrade(t: &TestRoot) {
    let kernel = format!("usr/lib/modules/{K_NEW}/vmlinuz");
    t.offer("linux", "2.0-1", &[(&kernel, "fake vmlinuz\n")]);
    t.offer("linux-headers", "2.0-1", &borrowed(&headers_entries(K_NEW)));
}

/// What pacman does after the PreTransaction hooks of the kernel upgrade.
pub fn upgrade_kernel(t: &TestRoot) {
    t.remove_package("linux").remove_package("linux-headers");
    t.kernel("linux", K_NEW).headers_version("linux-headers", "2.0-1", K_NEW);
}

/// The `build` calls of a run, as (module/version, kernel).
pub fn builds(run: &Run) -> Vec<(String, String)> {
    let mut builds: Vec<(String, String)> = run
        .dkms()
        .iter()
        .filter(|c| c.action() == Some("build"))
        .map(|c| (format!("{}/{}", c.module().unwrap(), c.version().unwrap()), c.kernel().unwrap().to_owned()))
        .collect();
    builds.sort();
    builds
}

/// (module/version, kernel) pairs, as [`builds`] gives them.
pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(m, k)| ((*m).to_owned(), (*k).to_owned())).collect()
}

/// What pacman gives the guard's hook for a kernel upgrade from `old` to `new` (a new kver): the
/// incoming kernel image and headers (Install), the leaving kernel's `modules.order` (Remove).
pub fn kernel_upgrade_targets(old: &str, new: &str) -> String {
    format!(
        "usr/lib/modules/{new}/vmlinuz\nusr/lib/modules/{new}/build/include/\nusr/lib/modules/{old}/modules.order\n"
    )
}

/// A dkms.conf for module `name`/`version`, in the shape `*-dkms` packages ship.
pub fn dkms_conf(name: &str, version: &str) -> String {
    format!(
        "PACKAGE_NAME=\"{name}\"\n\
         PACKAGE_VERSION=\"{version}\"\n\
         BUILT_MODULE_NAME[0]=\"{name}\"\n\
         DEST_MODULE_LOCATION[0]=\"/updates/dkms\"\n\
         MAKE[0]=\"make -C ${{kernel_source_dir}} M=${{dkms_tree}}/${{PACKAGE_NAME}}/${{PACKAGE_VERSION}}/build KVER=$kernelver modules\"\n\
         CLEAN=\"make clean\"\n\
         AUTOINSTALL=\"yes\"\n"
    )
}

impl TestRoot {
    /// An empty fixture root: a local pacman database with no package, empty `usr/src`,
    /// `usr/lib/modules` and dkms tree.
    pub fn new() -> TestRoot {
        let tmp = tempfile::Builder::new().prefix("dkms-hook-test.").tempdir().unwrap();
        let root = tmp.path().join("root");
        let bin = tmp.path().join("bin");
        for dir in ["var/lib/pacman/local", "var/lib/dkms", "usr/src", "usr/lib/modules", "etc"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::write(root.join("var/lib/pacman/local/ALPM_DB_VERSION"), "9\n").unwrap();
        fs::create_dir_all(&bin).unwrap();
        for (name, text) in [("fake-dkms", FAKE_DKMS), ("fake-depmod", FAKE_DEPMOD)] {
            let path = bin.join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let calls_log = tmp.path().join("calls.log");
        fs::write(&calls_log, "").unwrap();
        TestRoot { tmp, root, bin, calls_log }
    }

    /// A root with two kernels, both with headers: `linux` at [`K1`] and `linux-lts` at [`K2`].
    pub fn with_two_kernels() -> TestRoot {
        let t = TestRoot::new();
        t.kernel("linux", K1).headers("linux-headers", K1);
        t.kernel("linux-lts", K2).headers("linux-lts-headers", K2);
        t
    }

    /// The fixture root `R`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `R/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The fake dkms script (`--dkms`).
    pub fn fake_dkms(&self) -> PathBuf {
        self.bin.join("fake-dkms")
    }

    /// The fake depmod script (`--depmod`).
    pub fn fake_depmod(&self) -> PathBuf {
        self.bin.join("fake-depmod")
    }

    /// The scratch directory around `R`, for files that must not be inside the root.
    pub fn scratch(&self) -> &Path {
        self.tmp.path()
    }

    fn local_db(&self) -> PathBuf {
        self.root.join("var/lib/pacman/local")
    }

    /// Installs package `name` `version` (with pkgrel, e.g. `1.0-1`) into the local database, owning
    /// `entries` and every parent directory of them, and creates them on disk: an entry ending in `/`
    /// is a directory, any other a file with the given content (an existing file is left alone).
    pub fn package(&self, name: &str, version: &str, entries: &[(&str, &str)]) -> &Self {
        assert!(version.contains('-'), "package version {version} needs a pkgrel");
        let dir = self.local_db().join(format!("{name}-{version}"));
        assert!(self.installed_version(name).is_none(), "package {name} is already installed");
        let mut files = BTreeSet::new();
        for (path, content) in entries {
            assert!(!path.starts_with('/'), "package paths have no leading slash: {path}");
            let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
            for depth in 1..parts.len() {
                files.insert(format!("{}/", parts[..depth].join("/")));
            }
            files.insert(path.to_string());
            let on_disk = self.root.join(path);
            if path.ends_with('/') {
                fs::create_dir_all(&on_disk).unwrap();
            } else if !on_disk.exists() {
                fs::create_dir_all(on_disk.parent().unwrap()).unwrap();
                fs::write(&on_disk, content).unwrap();
            }
        }
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("desc"),
            format!(
                "%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%BASE%\n{name}\n\n%DESC%\nfixture package\n\n\
                 %ARCH%\n{ARCH}\n\n%BUILDDATE%\n1700000000\n\n%INSTALLDATE%\n1700000000\n\n\
                 %PACKAGER%\ndkms-hook tests\n\n%SIZE%\n0\n\n%VALIDATION%\nnone\n\n"
            ),
        )
        .unwrap();
        let mut list = String::from("%FILES%\n");
        for file in &files {
            list.push_str(file);
            list.push('\n');
        }
        list.push('\n');
        fs::write(dir.join("files"), list).unwrap();
        self
    }

    /// Gives the installed package `name` the `depends` entries (as written: `nvidia-utils=590-1`).
    pub fn depends(&self, name: &str, depends: &[&str]) -> &Self {
        let version = self.installed_version(name).expect("the package is installed");
        let desc = self.local_db().join(format!("{name}-{version}/desc"));
        let mut text = fs::read_to_string(&desc).unwrap();
        text.push_str(&format!("%DEPENDS%\n{}\n\n", depends.join("\n")));
        fs::write(desc, text).unwrap();
        self
    }

    /// The version of installed package `name`, if any.
    pub fn installed_version(&self, name: &str) -> Option<String> {
        for entry in fs::read_dir(self.local_db()).unwrap() {
            let entry = entry.unwrap();
            if !entry.path().is_dir() {
                continue;
            }
            let desc = fs::read_to_string(entry.path().join("desc")).unwrap();
            let mut lines = desc.lines();
            let mut found_name = None;
            let mut found_version = None;
            while let Some(line) = lines.next() {
                match line {
                    "%NAME%" => found_name = lines.next().map(str::to_owned),
                    "%VERSION%" => found_version = lines.next().map(str::to_owned),
                    _ => {}
                }
            }
            if found_name.as_deref() == Some(name) {
                return found_version;
            }
        }
        None
    }

    fn files_of(&self, pkgdir: &Path) -> Vec<String> {
        let list = fs::read_to_string(pkgdir.join("files")).unwrap();
        list.lines().skip(1).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// Removes package `name` as pacman does: its database entry, its files, and its directories
    /// that are empty and owned by no other package. Simulates the transaction between a
    /// PreTransaction and a PostTransaction hook.
    pub fn remove_package(&self, name: &str) -> &Self {
        let version = self.installed_version(name).unwrap_or_else(|| panic!("{name} is not installed"));
        let pkgdir = self.local_db().join(format!("{name}-{version}"));
        let files = self.files_of(&pkgdir);
        fs::remove_dir_all(&pkgdir).unwrap();
        let mut others = BTreeSet::new();
        for entry in fs::read_dir(self.local_db()).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_dir() {
                others.extend(self.files_of(&entry.path()));
            }
        }
        for file in files.iter().filter(|f| !f.ends_with('/')) {
            if !others.contains(file) {
                let _ = fs::remove_file(self.root.join(file));
            }
        }
        // Deepest first, so a directory is empty by the time its parent is tried.
        let mut dirs: Vec<&String> = files.iter().filter(|f| f.ends_with('/')).collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        for dir in dirs {
            if !others.contains(dir) {
                let _ = fs::remove_dir(self.root.join(dir)); // fails, as in pacman, when not empty
            }
        }
        self
    }

    /// Kernel package `pkgname` owning `usr/lib/modules/KVER/{vmlinuz,pkgbase,modules.order,kernel/}`;
    /// `pkgbase` holds `pkgname`, as on Arch.
    pub fn kernel(&self, pkgname: &str, kver: &str) -> &Self {
        let m = format!("usr/lib/modules/{kver}");
        let pkgbase = format!("{pkgname}\n");
        self.package(
            pkgname,
            "1.0-1",
            &[
                (&format!("{m}/vmlinuz"), "fake vmlinuz\n"),
                (&format!("{m}/pkgbase"), &pkgbase),
                (&format!("{m}/modules.order"), "kernel/drivers/fake/fake.ko\n"),
                (&format!("{m}/kernel/"), ""),
                (&format!("{m}/kernel/drivers/"), ""),
                (&format!("{m}/kernel/drivers/fake/"), ""),
                (&format!("{m}/kernel/drivers/fake/fake.ko"), "fake in-tree module\n"),
            ],
        )
    }

    /// Headers package `pkgname` owning `usr/lib/modules/KVER/build/` with `build/include/`.
    pub fn headers(&self, pkgname: &str, kver: &str) -> &Self {
        self.headers_version(pkgname, "1.0-1", kver)
    }

    /// Like [`TestRoot::headers`] with the package version given.
    pub fn headers_version(&self, pkgname: &str, version: &str, kver: &str) -> &Self {
        let entries = headers_entries(kver);
        self.package(pkgname, version, &borrowed(&entries))
    }

    /// Module-source package `pkgname` (version `1.0-1`) owning `usr/src/DIR/` with `dkms.conf`.
    pub fn module_pkg(&self, pkgname: &str, dir: &str, dkms_conf: &str) -> &Self {
        self.module_pkg_version(pkgname, "1.0-1", dir, dkms_conf)
    }

    /// Like [`TestRoot::module_pkg`] with the package version given (e.g. for a pkgrel bump).
    pub fn module_pkg_version(&self, pkgname: &str, version: &str, dir: &str, dkms_conf: &str) -> &Self {
        let entries = module_entries(dir, dkms_conf);
        self.package(pkgname, version, &borrowed(&entries))
    }

    /// Replaces the fake headers of `kver` (see [`TestRoot::headers`]) with a copy of Debian's real
    /// ones (`/usr/src/linux-headers-KVER`), with the relative links that leave the tree (scripts,
    /// tools) made absolute.
    pub fn real_headers(&self, kver: &str) -> &Self {
        let build = self.path(&format!("usr/lib/modules/{kver}/build"));
        let debian = PathBuf::from(format!("/usr/src/linux-headers-{kver}"));
        fs::remove_dir_all(&build).unwrap();
        let status = Command::new("cp").arg("-a").arg(&debian).arg(&build).status().unwrap();
        assert!(status.success(), "cannot copy {}", debian.display());
        for name in ["scripts", "tools"] {
            let link = build.join(name);
            if let Ok(target) = fs::read_link(&link) {
                if target.is_relative() {
                    let abs = fs::canonicalize(debian.join(&target)).unwrap();
                    fs::remove_file(&link).unwrap();
                    std::os::unix::fs::symlink(abs, &link).unwrap();
                }
            }
        }
        self
    }

    /// A `usr/lib/modules/KVER` directory that no package owns (left over by an old kernel, with
    /// stale headers and a stale DKMS module): not a kernel.
    pub fn leftover_kernel_dir(&self, kver: &str) -> &Self {
        let m = self.root.join("usr/lib/modules").join(kver);
        fs::create_dir_all(m.join("build/include/generated")).unwrap();
        fs::create_dir_all(m.join("updates/dkms")).unwrap();
        fs::write(m.join("updates/dkms/stale.ko"), "stale\n").unwrap();
        fs::write(m.join("modules.dep"), "").unwrap();
        self
    }

    /// The relocation flags the binary passes to dkms for this root and kernel `kver`.
    pub fn relocation_flags(&self, kver: Option<&str>) -> Vec<String> {
        let r = self.root.display();
        let mut flags = vec![
            "--sourcetree".to_owned(),
            format!("{r}/usr/src"),
            "--dkmstree".to_owned(),
            format!("{r}/var/lib/dkms"),
            "--installtree".to_owned(),
            format!("{r}/usr/lib/modules"),
        ];
        if let Some(k) = kver {
            flags.push("--kernelsourcedir".to_owned());
            flags.push(format!("{r}/usr/lib/modules/{k}/build"));
        }
        flags
    }

    /// Runs the fake dkms directly (not recorded): sets up dkms-tree state exactly as the fake
    /// produces it when the binary runs it. Panics unless it exits 0.
    pub fn dkms(&self, action: &str, module: &str, version: &str, kver: &str) -> &Self {
        let out = Command::new(self.fake_dkms())
            .args([action, "--no-depmod", "-m", module, "-v", version, "-k", kver])
            .args(self.relocation_flags(Some(kver)))
            .env("FAKE_ROOT", &self.root)
            .env_remove("FAKE_CALLS_LOG")
            .env_remove("FAKE_DKMS_FAIL")
            .env_remove("FAKE_DKMS_VERMAGIC")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fixture: fake dkms {action} {module}/{version} -k {kver} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self
    }

    /// dkms tree state after a failed build for `kver`: `M/V/source` and `M/V/build/make.log`,
    /// nothing built (the fake's exit 10 path).
    pub fn dkms_failed_build(&self, module: &str, version: &str, kver: &str) -> &Self {
        let out = Command::new(self.fake_dkms())
            .args(["install", "--no-depmod", "-m", module, "-v", version, "-k", kver])
            .args(self.relocation_flags(Some(kver)))
            .env("FAKE_ROOT", &self.root)
            .env("FAKE_DKMS_FAIL", format!("{module}/{version}/{kver}=10"))
            .env_remove("FAKE_CALLS_LOG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(10), "fixture: fake dkms did not fail as asked");
        self
    }

    /// dkms tree state: `module`/`version` built and installed for `kver`.
    pub fn dkms_installed(&self, module: &str, version: &str, kver: &str) -> &Self {
        self.dkms("install", module, version, kver)
    }

    /// dkms tree state: `module`/`version` built (not installed) for `kver`.
    pub fn dkms_built(&self, module: &str, version: &str, kver: &str) -> &Self {
        self.dkms("build", module, version, kver)
    }

    /// Whether dkms's tree has `module`/`version` built for `kver` (`M/V/K/ARCH/module/`).
    pub fn is_built(&self, module: &str, version: &str, kver: &str) -> bool {
        self.path(&format!("var/lib/dkms/{module}/{version}/{kver}/{ARCH}/module")).is_dir()
    }

    /// The version `module` is installed at for `kver`, from the `M/kernel-K-ARCH` link.
    pub fn installed_for(&self, module: &str, kver: &str) -> Option<String> {
        let link = self.path(&format!("var/lib/dkms/{module}/kernel-{kver}-{ARCH}"));
        let target = fs::read_link(link).ok()?;
        Some(target.to_str()?.split('/').next()?.to_owned())
    }

    /// Whether `R/usr/lib/modules/KVER/updates/dkms/NAME.ko` exists.
    pub fn ko_installed(&self, name: &str, kver: &str) -> bool {
        self.path(&format!("usr/lib/modules/{kver}/updates/dkms/{name}.ko")).exists()
    }

    /// Whether the dkms tree knows `module`/`version` at all (`M/V/`).
    pub fn is_registered(&self, module: &str, version: &str) -> bool {
        self.path(&format!("var/lib/dkms/{module}/{version}")).symlink_metadata().is_ok()
    }

    /// Runs `dkms-hook --root R --dkms FAKE --depmod FAKE ARGS…` with `stdin` as the hook targets.
    pub fn run(&self, args: &[&str], stdin: impl AsRef<[u8]>) -> Run {
        self.run_env(args, stdin, &[])
    }

    /// [`TestRoot::run`] with extra environment, e.g. `FAKE_DKMS_FAIL`.
    pub fn run_env(&self, args: &[&str], stdin: impl AsRef<[u8]>, env: &[(&str, &str)]) -> Run {
        self.run_raw(&self.args_with_fakes(args), stdin, env)
    }

    /// `--root ROOT --dkms FAKE --depmod FAKE ARGS…`: what [`TestRoot::run`] gives dkms-hook.
    fn args_with_fakes(&self, args: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = vec![
            "--root".into(),
            self.root.display().to_string(),
            "--dkms".into(),
            self.fake_dkms().display().to_string(),
            "--depmod".into(),
            self.fake_depmod().display().to_string(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv
    }

    /// Runs `dkms-hook ARGS…` exactly as given (no `--root` or fakes added), with the fakes'
    /// environment set.
    pub fn run_raw<S: AsRef<str>>(&self, args: &[S], stdin: impl AsRef<[u8]>, env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dkms-hook"));
        cmd.args(args.iter().map(|s| s.as_ref())).current_dir(self.tmp.path());
        self.run_command(cmd, args, stdin, env)
    }

    /// [`TestRoot::run`] as a hook of a pacman transaction: dkms-hook's parent process has the
    /// command line `pacman PACMAN…` and the working directory `cwd`, as pacman's has when it
    /// runs its hooks (the parent is bash under pacman's name; it starts dkms-hook and waits).
    pub fn run_under_pacman(&self, pacman: &[&str], cwd: &Path, args: &[&str], stdin: impl AsRef<[u8]>) -> Run {
        let mut argv: Vec<String> = vec![env!("CARGO_BIN_EXE_dkms-hook").into()];
        argv.extend(self.args_with_fakes(args));
        let argv_file = self.scratch().join("hook-argv");
        fs::write(&argv_file, argv.iter().map(|a| format!("{a}\0")).collect::<String>()).unwrap();
        // `exec -a` names the process; bash runs the script's last command in a child because
        // of the `exit` after it. The process's command line: `pacman -c SCRIPT PACMAN…`.
        let script = r#"mapfile -d '' argv <"$HOOK_ARGV"; "${argv[@]}"; exit $?"#;
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(r#"exec -a pacman bash -c "$0" "$@""#)
            .arg(script)
            .args(pacman)
            .env("HOOK_ARGV", &argv_file)
            .current_dir(cwd);
        self.run_command(cmd, &argv[1..], stdin, &[])
    }

    fn run_command<S: AsRef<str>>(
        &self,
        mut cmd: Command,
        args: &[S],
        stdin: impl AsRef<[u8]>,
        env: &[(&str, &str)],
    ) -> Run {
        fs::write(&self.calls_log, "").unwrap();
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("DKMS_HOOK") || key.starts_with("FAKE_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        cmd.env("NO_COLOR", "1").env("FAKE_ROOT", &self.root).env("FAKE_CALLS_LOG", &self.calls_log);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start dkms-hook (did you `. scripts/env` for libalpm?): {e}"));
        let input = stdin.as_ref().to_vec();
        let mut child_stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            // The binary may exit without reading everything (e.g. a usage error): not our failure.
            let _ = child_stdin.write_all(&input);
        });
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            out.read_to_end(&mut buf).unwrap();
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            err.read_to_end(&mut buf).unwrap();
            buf
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > RUN_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "dkms-hook {:?} did not finish in {RUN_TIMEOUT:?}",
                    args.iter().map(|s| s.as_ref()).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        writer.join().unwrap();
        let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
        let calls = fs::read_to_string(&self.calls_log)
            .unwrap()
            .lines()
            .map(|line| {
                let mut parts = line.split('\t').map(str::to_owned);
                let program = parts.next().unwrap_or_default();
                Call { program, args: parts.filter(|a| !a.is_empty()).collect() }
            })
            .collect();
        Run { args: args.iter().map(|s| s.as_ref().to_owned()).collect(), code: status.code(), stdout, stderr, calls }
    }

    /// Package `name` `version` (with pkgrel) in a sync database `test.db` (with the packages
    /// offered before) and its file in pacman's cache, as pacman has them when it runs the
    /// PreTransaction hooks of a `pacman -S`/`-Syu` that upgrades it.
    pub fn offer_upgrade(&self, name: &str, version: &str) -> &Self {
        self.offer(name, version, &[])
    }

    /// Like [`TestRoot::offer_upgrade`], with the package holding `entries` (as for
    /// [`TestRoot::package`]): what the guard extracts.
    pub fn offer(&self, name: &str, version: &str, entries: &[(&str, &str)]) -> &Self {
        self.offer_depending(name, version, entries, &[])
    }

    /// Like [`TestRoot::offer`], with `depends` entries (as written: `nvidia-utils=590-1`) in the
    /// package's metadata.
    pub fn offer_depending(&self, name: &str, version: &str, entries: &[(&str, &str)], depends: &[&str]) -> &Self {
        let bsdtar = |args: &[&std::ffi::OsStr]| {
            let ok = Command::new("bsdtar").args(args).status().expect("bsdtar (libarchive-tools)").success();
            assert!(ok, "bsdtar {args:?} failed");
        };
        let filename = format!("{name}-{version}-x86_64.pkg.tar.zst");
        let pkg = self.scratch().join(format!("offered/{name}-{version}"));
        fs::create_dir_all(&pkg).unwrap();
        fs::write(
            pkg.join(".PKGINFO"),
            format!(
                "pkgname = {name}\npkgbase = {name}\npkgver = {version}\narch = x86_64\nsize = 0\n{}",
                depend_lines(depends)
            ),
        )
        .unwrap();
        for (path, content) in entries {
            let on_disk = pkg.join(path);
            if path.ends_with('/') {
                fs::create_dir_all(&on_disk).unwrap();
            } else {
                fs::create_dir_all(on_disk.parent().unwrap()).unwrap();
                fs::write(&on_disk, content).unwrap();
            }
        }
        let cache = self.path("var/cache/pacman/pkg");
        fs::create_dir_all(&cache).unwrap();
        let file = cache.join(&filename);
        let mut members: Vec<&std::ffi::OsStr> = vec![".PKGINFO".as_ref()];
        if pkg.join("usr").exists() {
            members.push("usr".as_ref());
        }
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["--zstd".as_ref(), "-cf".as_ref(), file.as_os_str(), "-C".as_ref(), pkg.as_os_str()];
        args.extend(members);
        bsdtar(&args);
        // The database holds every package offered so far: one `NAME-VERSION/desc` each, with
        // the file's checksum as repo-add writes it.
        let sha256: String = Sha256::digest(fs::read(&file).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
        let db = self.scratch().join("offered-db");
        let entry = db.join(format!("{name}-{version}"));
        fs::create_dir_all(&entry).unwrap();
        fs::write(
            entry.join("desc"),
            format!(
                "%FILENAME%\n{filename}\n\n%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%SHA256SUM%\n{sha256}\n\n\
                 %ARCH%\nx86_64\n\n"
            ),
        )
        .unwrap();
        fs::create_dir_all(self.path("var/lib/pacman/sync")).unwrap();
        let file = self.path("var/lib/pacman/sync/test.db");
        let mut entries: Vec<std::ffi::OsString> = fs::read_dir(&db).unwrap().map(|e| e.unwrap().file_name()).collect();
        entries.sort();
        let mut args: Vec<&std::ffi::OsStr> = vec!["-czf".as_ref(), file.as_os_str(), "-C".as_ref(), db.as_os_str()];
        args.extend(entries.iter().map(|e| e.as_os_str()));
        bsdtar(&args);
        self
    }

    /// The root's lock, `R/var/lib/dkms-hook/lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.path("var/lib/dkms-hook/lock")
    }

    /// Takes the root's lock in the test process (with the test's PID in it), as a running
    /// dkms-hook would; held until the returned file is dropped. Deterministic: when this returns,
    /// the lock is held.
    pub fn hold_lock(&self) -> fs::File {
        let path = self.lock_path();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file = fs::File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        file.try_lock().expect("the lock is free");
        writeln!(file, "{}", std::process::id()).unwrap();
        file
    }

    /// Every file, directory and symlink under `R` with its content or target, to compare before
    /// and after a run that must change nothing.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Entry> {
        fn walk(base: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Entry>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(base).unwrap().to_owned();
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.file_type().is_symlink() {
                    into.insert(rel, Entry::Link(fs::read_link(&path).unwrap()));
                } else if meta.is_dir() {
                    into.insert(rel, Entry::Dir);
                    walk(base, &path, into);
                } else {
                    into.insert(rel, Entry::File(fs::read(&path).unwrap()));
                }
            }
        }
        let mut map = BTreeMap::new();
        walk(&self.root, &self.root, &mut map);
        map
    }
}

/// The paths that differ between two [`TestRoot::snapshot`]s (added, removed or changed), for
/// failure messages.
pub fn snapshot_diff(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, entry) in after {
        match before.get(path) {
            None => out.push(format!("added {}", path.display())),
            Some(old) if old != entry => out.push(format!("changed {}", path.display())),
            _ => {}
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        out.push(format!("removed {}", path.display()));
    }
    out
}

/// Asserts the root is as `before`, naming what changed.
#[track_caller]
pub fn assert_unchanged(t: &TestRoot, before: &BTreeMap<PathBuf, Entry>, run: &Run) {
    let diff = snapshot_diff(before, &t.snapshot());
    assert!(diff.is_empty(), "the root must not change, but: {diff:?}\n{run}");
}

/// One thing found under the fixture root by [`TestRoot::snapshot`].
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// One recorded call of a fake: `program` is `dkms` or `depmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub program: String,
    pub args: Vec<String>,
}

/// dkms options that take a value (so the value is not mistaken for the action).
const DKMS_VALUE_OPTIONS: &[&str] = &[
    "-m",
    "--module",
    "-v",
    "--version",
    "-k",
    "--kernelver",
    "-a",
    "--arch",
    "-j",
    "-c",
    "--sourcetree",
    "--dkmstree",
    "--installtree",
    "--kernelsourcedir",
    "-b",
];

impl Call {
    /// The value of option `name` (`NAME VALUE` or `NAME=VALUE`).
    pub fn value(&self, name: &str) -> Option<&str> {
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if arg == name {
                return args.next().map(String::as_str);
            }
            if let Some(v) = arg.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
                return Some(v);
            }
        }
        None
    }

    /// Whether flag `name` is among the arguments.
    pub fn has(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == name)
    }

    /// The arguments that are neither options nor option values (dkms: the action first).
    pub fn positionals(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if DKMS_VALUE_OPTIONS.contains(&arg.as_str()) {
                args.next();
            } else if arg.starts_with("-k") && arg.len() > 2 && !arg.starts_with("--") {
                // `-kKVER`
            } else if !arg.starts_with('-') {
                out.push(arg.as_str());
            }
        }
        out
    }

    /// dkms's action (`install`, `remove`, …).
    pub fn action(&self) -> Option<&str> {
        self.positionals().first().copied()
    }

    /// The module name (`-m M`, `-m M/V` or a positional `M/V`).
    pub fn module(&self) -> Option<&str> {
        let m = self.value("-m").or_else(|| self.positionals().get(1).copied())?;
        Some(m.split('/').next().unwrap())
    }

    /// The module version (`-v V`, or from `M/V`).
    pub fn version(&self) -> Option<&str> {
        if let Some(v) = self.value("-v") {
            return Some(v);
        }
        let m = self.value("-m").or_else(|| self.positionals().get(1).copied())?;
        m.split_once('/').map(|(_, v)| v)
    }

    /// The kernel (`-k K`, `-kK` or `--kernelver K`), without a `/ARCH` suffix.
    pub fn kernel(&self) -> Option<&str> {
        let k = self.value("-k").or_else(|| self.value("--kernelver")).or_else(|| {
            self.args.iter().find(|a| a.starts_with("-k") && a.len() > 2 && !a.starts_with("--")).map(|a| &a[2..])
        })?;
        Some(k.split('/').next().unwrap())
    }

    /// For depmod: the kernel version (its last positional).
    pub fn depmod_kernel(&self) -> Option<&str> {
        self.positionals().last().copied()
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.program, self.args.join(" "))
    }
}

/// A (module, version, kernel) triple as the tests write them.
pub type Job = (String, String, String);

/// What one run of the binary did.
pub struct Run {
    /// The binary's arguments.
    pub args: Vec<String>,
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The fakes' calls, in the order they were made.
    pub calls: Vec<Call>,
}

impl Run {
    /// stdout then stderr (pacman merges them into one stream).
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics with the whole run shown unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit status\n{self}");
        self
    }

    /// The dkms calls, in order.
    pub fn dkms(&self) -> Vec<&Call> {
        self.calls.iter().filter(|c| c.program == "dkms").collect()
    }

    /// The depmod calls, in order.
    pub fn depmod(&self) -> Vec<&Call> {
        self.calls.iter().filter(|c| c.program == "depmod").collect()
    }

    fn jobs(&self, action: &str, all: bool) -> Vec<Job> {
        self.dkms()
            .into_iter()
            .filter(|c| c.action() == Some(action) && c.has("--all") == all)
            .map(|c| {
                (
                    c.module().unwrap_or("?").to_owned(),
                    c.version().unwrap_or("?").to_owned(),
                    c.kernel().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// The install jobs dkms was asked to do: (module, version, kernel) of every `dkms install` or
    /// `dkms build` call, each once, in order of first call (the binary may build in a private
    /// tree and then install, or just install).
    pub fn installs(&self) -> Vec<Job> {
        let mut out: Vec<Job> = Vec::new();
        for j in self.jobs("build", false).into_iter().chain(self.jobs("install", false)) {
            if !out.contains(&j) {
                out.push(j);
            }
        }
        let first = |j: &Job| {
            self.calls
                .iter()
                .position(|c| {
                    matches!(c.action(), Some("build" | "install"))
                        && c.module() == Some(&j.0)
                        && c.version() == Some(&j.1)
                        && c.kernel() == Some(&j.2)
                })
                .unwrap_or(usize::MAX)
        };
        out.sort_by_key(|j| first(j));
        out
    }

    /// Index in [`Run::calls`] of the first dkms call with one of `actions` for `module` and `kernel`.
    pub fn first_call(&self, actions: &[&str], module: &str, kernel: &str) -> Option<usize> {
        self.calls.iter().position(|c| {
            c.program == "dkms"
                && c.action().is_some_and(|a| actions.contains(&a))
                && c.module() == Some(module)
                && c.kernel() == Some(kernel)
        })
    }

    /// `dkms remove -k` calls as (module, version, kernel), in order.
    pub fn removes(&self) -> Vec<Job> {
        self.jobs("remove", false)
    }

    /// `dkms remove --all` calls as (module, version), in order.
    pub fn unregisters(&self) -> Vec<(String, String)> {
        self.jobs("remove", true).into_iter().map(|(m, v, _)| (m, v)).collect()
    }

    /// The kernels depmod ran for, in order.
    pub fn depmod_kernels(&self) -> Vec<String> {
        self.depmod().iter().map(|c| c.depmod_kernel().unwrap_or("").to_owned()).collect()
    }

    /// The first line of the output holding all of `needles`.
    pub fn line(&self, needles: &[&str]) -> Option<String> {
        self.output().lines().find(|l| needles.iter().all(|n| l.contains(n))).map(str::to_owned)
    }

    /// The first line holding all of `needles`; panics with the whole run shown if there is none.
    #[track_caller]
    pub fn expect_line(&self, needles: &[&str]) -> String {
        self.line(needles).unwrap_or_else(|| panic!("no output line contains all of {needles:?}\n{self}"))
    }

    /// How many output lines hold `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        self.output().lines().filter(|l| l.contains(needle)).count()
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- dkms-hook {}", self.args.join(" "))?;
        writeln!(f, "--- exit code: {:?}", self.code)?;
        writeln!(f, "--- stdout:\n{}", self.stdout)?;
        writeln!(f, "--- stderr:\n{}", self.stderr)?;
        writeln!(f, "--- calls:")?;
        for call in &self.calls {
            writeln!(f, "{call}")?;
        }
        Ok(())
    }
}

/// `(m, v, k)` as owned strings, for comparing with [`Run::installs`] and [`Run::removes`].
pub fn job(m: &str, v: &str, k: &str) -> Job {
    (m.to_owned(), v.to_owned(), k.to_owned())
}

/// `jobs` sorted, for comparisons where the order does not matter.
pub fn sorted(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.sort();
    jobs
}

/// Asserts that dkms and depmod only ever touch `t`'s root: every dkms call carries the relocation
/// flags (`--sourcetree R/usr/src`, `--installtree R/usr/lib/modules`, a `--dkmstree` inside `R`,
/// `--kernelsourcedir R/usr/lib/modules/K/build` for a build); the calls that change the real dkms
/// tree (`install`, `remove`, `add`) use `R/var/lib/dkms` and, for install and remove, `--no-depmod`;
/// depmod gets `-b R`.
#[track_caller]
pub fn assert_relocated(t: &TestRoot, run: &Run) {
    let r = t.root().display().to_string();
    let norm = |v: Option<&str>| v.map(|v| v.trim_end_matches('/').to_owned());
    for call in run.dkms() {
        let action = call.action().unwrap_or("");
        assert_eq!(norm(call.value("--sourcetree")), Some(format!("{r}/usr/src")), "wrong --sourcetree: {call}\n{run}");
        assert_eq!(
            norm(call.value("--installtree")),
            Some(format!("{r}/usr/lib/modules")),
            "wrong --installtree: {call}\n{run}"
        );
        let tree = norm(call.value("--dkmstree")).unwrap_or_default();
        assert!(tree.starts_with(&format!("{r}/")), "--dkmstree outside the root: {call}\n{run}");
        if matches!(action, "install" | "remove" | "add") {
            assert_eq!(tree, format!("{r}/var/lib/dkms"), "{action} must act on the dkms tree: {call}\n{run}");
        }
        if matches!(action, "install" | "remove") {
            assert!(call.has("--no-depmod"), "dkms {action} without --no-depmod: {call}\n{run}");
        }
        if matches!(action, "install" | "build") {
            let k = call.kernel().expect("install without -k");
            assert_eq!(
                norm(call.value("--kernelsourcedir")),
                Some(format!("{r}/usr/lib/modules/{k}/build")),
                "dkms {action} with a wrong --kernelsourcedir: {call}\n{run}"
            );
        }
    }
    for call in run.depmod() {
        assert_eq!(call.value("-b"), Some(r.as_str()), "depmod without -b ROOT: {call}\n{run}");
    }
}

/// `.PKGINFO` lines for `depends` entries.
fn depend_lines(depends: &[&str]) -> String {
    depends.iter().map(|d| format!("depend = {d}\n")).collect()
}
