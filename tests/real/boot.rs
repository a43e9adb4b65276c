//! The boot check: each kernel of a root boots, and loads what dkms-hook installed for it.
//!
//! For every kernel for which `dkms-hook status --json` (run in the root) reports a module
//! `installed` or `kept`, `ovr_boot_check` (`scripts/lib/overlay-root.sh`, shared with
//! `scripts/demo`) boots the kernel's own `vmlinuz` from the root under QEMU with an initramfs made
//! of busybox and the root's `usr/lib/modules/<kver>` as pacman and dkms-hook left it (the kernel's
//! modules, dkms's, the `modules.dep` of dkms-hook's depmod), runs `modprobe` for each of those
//! modules and prints what became of them. [`Boot::problems`] judges it: every module loads, no
//! "disagrees about version of symbol" or "Unknown symbol" in the kernel log, the file modprobe
//! loads is dkms's build of the version `status` reports (the one still serving, for `kept`), its
//! sysfs `version`/`srcversion` are that build's, and no module is loaded for a kernel where
//! `status` says it is not installed (skipped by BUILD_EXCLUSIVE, failed, …).
//!
//! KVM is used where it works (a short probe, once per boot of the host: the answer is kept in
//! `target/tmp/qemu-accel`), TCG otherwise; `OVR_QEMU_ACCEL=tcg|kvm` decides instead. The kernels of
//! one check boot side by side (two at a time).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::{list, modinfo, shell, shell_env, Root};

/// A module the booted kernel must load.
#[derive(Debug, Clone)]
pub struct Expected {
    /// dkms's module name.
    pub module: String,
    /// The version `status` says is installed (for `kept`: the version still serving).
    pub version: String,
    /// `status`'s state: `installed` or `kept`.
    pub state: String,
    /// The `.ko` file's stem: what modprobe is given.
    pub ko: String,
    /// sha256 of dkms's build of that version for the kernel (`var/lib/dkms/M/V/K/<arch>/module/`).
    pub sha256: String,
    /// modinfo's `version` and `srcversion` of that build (empty when it declares none).
    pub modversion: String,
    pub srcversion: String,
}

/// What the check expects of one kernel.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub kernel: String,
    /// Must load.
    pub load: Vec<Expected>,
    /// `.ko` stems that must not be loaded, with why (`module/version: state`).
    pub absent: Vec<(String, String)>,
    /// What is wrong before booting (no build of an installed module in the dkms tree).
    pub problems: Vec<String>,
}

/// What the guest reported about one module.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The file `modules.dep` names (relative to the module directory); empty when it has none.
    pub file: String,
    pub sha256: String,
    /// `/sys/module/<name>/version` and `srcversion` (empty when absent).
    pub version: String,
    pub srcversion: String,
}

/// One boot of one kernel.
#[derive(Debug, Clone)]
pub struct Boot {
    pub plan: Plan,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// How long QEMU ran.
    pub seconds: f64,
    /// The helper's exit status: 0 every module loaded, 1 one did not, 2 the boot did not complete.
    pub status: Option<i32>,
    /// `uname -r` in the guest.
    pub booted: String,
    /// Each modprobe: Ok, or its error message.
    pub modprobe: BTreeMap<String, Result<(), String>>,
    /// The names in `/proc/modules`.
    pub proc_modules: BTreeSet<String>,
    pub modules: BTreeMap<String, Loaded>,
    /// `/dev/video*`.
    pub devices: Vec<String>,
    /// The kernel log from the first load on.
    pub log: Vec<String>,
    /// Everything the helper printed.
    pub output: String,
}

/// The kernel's name for a module file's stem (`-` and `_` are the same to it).
fn kernel_name(ko: &str) -> String {
    ko.replace('-', "_")
}

impl Boot {
    /// Parses what `ovr_boot_check` printed.
    fn parse(plan: Plan, status: Option<i32>, output: String) -> Boot {
        let mut boot = Boot {
            plan,
            accel: String::new(),
            seconds: 0.0,
            status,
            booted: String::new(),
            modprobe: BTreeMap::new(),
            proc_modules: BTreeSet::new(),
            modules: BTreeMap::new(),
            devices: Vec::new(),
            log: Vec::new(),
            output: String::new(),
        };
        for line in output.lines() {
            let Some(said) = line.strip_prefix("boot-check: ") else { continue };
            let (what, rest) = said.split_once(' ').unwrap_or((said, ""));
            match what {
                "qemu" => {
                    for (key, value) in rest.split_whitespace().filter_map(|w| w.split_once('=')) {
                        match key {
                            "accel" => boot.accel = value.to_owned(),
                            "seconds" => boot.seconds = value.parse().unwrap_or_default(),
                            _ => {}
                        }
                    }
                }
                "kernel" => boot.booted = rest.to_owned(),
                "modprobe" => {
                    let (ko, result) = rest.split_once(' ').unwrap_or((rest, ""));
                    let result = match result.strip_prefix("failed:") {
                        Some(error) => Err(error.trim().to_owned()),
                        None if result == "ok" => Ok(()),
                        None => Err(result.to_owned()),
                    };
                    boot.modprobe.insert(ko.to_owned(), result);
                }
                "proc-modules" => {
                    boot.proc_modules.insert(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
                "module" => {
                    let mut words = rest.split(' ');
                    let ko = words.next().unwrap_or_default().to_owned();
                    let mut loaded = Loaded::default();
                    for (key, value) in words.filter_map(|w| w.split_once('=')) {
                        let value = value.to_owned();
                        match key {
                            "file" => loaded.file = value,
                            "sha256" => loaded.sha256 = value,
                            "version" => loaded.version = value,
                            "srcversion" => loaded.srcversion = value,
                            _ => {}
                        }
                    }
                    boot.modules.insert(ko, loaded);
                }
                "device" => boot.devices.push(rest.to_owned()),
                "log" => boot.log.push(rest.to_owned()),
                _ => {}
            }
        }
        boot.output = output;
        boot
    }

    pub fn kernel(&self) -> &str {
        &self.plan.kernel
    }

    /// Whether the module `ko` is in the guest's `/proc/modules`.
    pub fn loaded(&self, ko: &str) -> bool {
        self.proc_modules.contains(&kernel_name(ko))
    }

    /// The sysfs `version` of the loaded module `ko`.
    pub fn version_of(&self, ko: &str) -> Option<&str> {
        self.modules.get(ko).map(|m| m.version.as_str()).filter(|v| !v.is_empty() && self.loaded(ko))
    }

    /// The kernel log lines that name `ko`.
    pub fn log_of(&self, ko: &str) -> Vec<&str> {
        let name = kernel_name(ko);
        self.log.iter().map(String::as_str).filter(|l| l.contains(ko) || l.contains(&name)).collect()
    }

    /// Everything the check finds wrong; empty when the kernel loaded exactly what it should.
    pub fn problems(&self) -> Vec<String> {
        let k = self.kernel();
        let mut problems = self.plan.problems.clone();
        if self.status == Some(2) || self.status.is_none() || !self.output.lines().any(|l| l == "boot-check: done") {
            let console: Vec<&str> = self.output.lines().filter(|l| l.starts_with("boot-check: console")).collect();
            problems.push(format!(
                "the boot of {k} did not complete (helper status {:?}, {}, {:.1} s): {console:#?}",
                self.status, self.accel, self.seconds
            ));
            return problems;
        }
        if self.booted != k {
            problems.push(format!("booted kernel {:?}, not {k}", self.booted));
        }
        for line in &self.log {
            if line.contains("disagrees about version of symbol") || line.contains("Unknown symbol") {
                problems.push(format!("kernel log of {k}: {line}"));
            }
        }
        for e in &self.plan.load {
            let what = format!("{}/{} ({}) for {k}", e.module, e.version, e.state);
            match self.modprobe.get(&e.ko) {
                Some(Ok(())) => {}
                Some(Err(error)) => problems.push(format!("modprobe {} failed ({what}): {error}", e.ko)),
                None => problems.push(format!("no modprobe of {} ({what})", e.ko)),
            }
            if !self.loaded(&e.ko) {
                problems.push(format!("{} is not in /proc/modules ({what})", e.ko));
                continue;
            }
            let Some(m) = self.modules.get(&e.ko) else {
                problems.push(format!("nothing reported about {} ({what})", e.ko));
                continue;
            };
            if m.sha256 != e.sha256 {
                problems.push(format!(
                    "the {} modprobe loads ({}, sha256 {}) is not dkms's build of {what} (sha256 {})",
                    e.ko, m.file, m.sha256, e.sha256
                ));
            }
            if (m.version.as_str(), m.srcversion.as_str()) != (e.modversion.as_str(), e.srcversion.as_str()) {
                problems.push(format!(
                    "{} loaded with version {:?} srcversion {:?}, dkms's build of {what} has {:?} {:?}",
                    e.ko, m.version, m.srcversion, e.modversion, e.srcversion
                ));
            }
        }
        for (ko, why) in &self.plan.absent {
            if self.loaded(ko) {
                problems.push(format!("{ko} is loaded in {k} although status says {why}"));
            }
        }
        problems
    }

    /// One paragraph for the test's log: what loaded, the versions, the kernel log of the load.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "boot check {} ({}, {:.1} s, helper status {:?}):\n",
            self.kernel(),
            self.accel,
            self.seconds,
            self.status
        );
        for e in &self.plan.load {
            let result = match self.modprobe.get(&e.ko) {
                Some(Ok(())) => "ok".to_owned(),
                Some(Err(error)) => format!("FAILED: {error}"),
                None => "not run".to_owned(),
            };
            let version = self.modules.get(&e.ko).map(|m| m.version.as_str()).unwrap_or_default();
            text += &format!(
                "  modprobe {} ({}/{} {}): {result}; sysfs version {version:?}\n",
                e.ko, e.module, e.version, e.state
            );
        }
        for (ko, why) in &self.plan.absent {
            text += &format!("  not loaded: {ko} ({why}): {}\n", if self.loaded(ko) { "LOADED" } else { "right" });
        }
        text += &format!("  /proc/modules: {:?}; devices: {:?}\n", self.proc_modules, self.devices);
        for line in &self.log {
            text += &format!("  log: {line}\n");
        }
        text
    }
}

/// The accelerator for every boot of this process: `OVR_QEMU_ACCEL`, else what the probe found
/// for this boot of the host (kept in `target/tmp/qemu-accel`), else the probe's answer.
fn accel(vmlinuz: &Path) -> String {
    static ACCEL: OnceLock<String> = OnceLock::new();
    ACCEL
        .get_or_init(|| {
            if let Some(accel) = std::env::var("OVR_QEMU_ACCEL").ok().filter(|a| !a.is_empty()) {
                return accel;
            }
            let host_boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
            let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-accel");
            if let Some((boot, accel)) = fs::read_to_string(&cache).unwrap_or_default().trim().split_once(' ') {
                if boot == host_boot.trim() && !host_boot.is_empty() {
                    println!("boot check: {accel} (found for this boot of the host, {})", cache.display());
                    return accel.to_owned();
                }
            }
            let started = std::time::Instant::now();
            let ran = shell("ovr_qemu_accel", &[vmlinuz.to_str().unwrap()]);
            let accel = ran.output.lines().last().unwrap_or_default().trim().to_owned();
            assert!(ran.status.success() && ["kvm", "tcg"].contains(&accel.as_str()), "KVM probe: {}", ran.output);
            println!("boot check: KVM probe in {:.1} s: {}", started.elapsed().as_secs_f64(), ran.output.trim());
            let _ = fs::write(&cache, format!("{} {accel}\n", host_boot.trim()));
            accel
        })
        .clone()
}

/// The sha256 of a module's bytes, decompressed as the boot check's image holds them (see
/// `_ovr_decompress_modules`).
fn sha256(path: &Path) -> String {
    let name = path.to_string_lossy();
    let tool = [(".ko.zst", "zstd"), (".ko.xz", "xz"), (".ko.gz", "gzip")].into_iter().find(|(s, _)| name.ends_with(s));
    let bytes = match tool {
        Some((_, tool)) => {
            let out =
                std::process::Command::new(tool).arg("-dc").arg(path).output().expect("cannot run a decompressor");
            assert!(out.status.success(), "{tool} cannot decompress {}", path.display());
            out.stdout
        }
        None => fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    };
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The `.ko` stems of files in DIR.
fn ko_stems(dir: &Path) -> Vec<(String, PathBuf)> {
    list(dir).into_iter().filter_map(|f| f.split_once(".ko").map(|(stem, _)| (stem.to_owned(), dir.join(&f)))).collect()
}

impl Root {
    /// `dkms-hook status --json` in the root (its exit status says whether anything needs
    /// attention; the document is there either way).
    pub fn status_json(&self) -> serde_json::Value {
        let ran = self.chroot(&["sh", "-c", "dkms-hook status --json 2>/dev/null"]);
        serde_json::from_str(&ran.output).unwrap_or_else(|e| panic!("dkms-hook status --json ({e}):\n{}", ran.output))
    }

    /// What the boot check expects of each kernel that has a module to load, from `status` and the
    /// dkms tree.
    pub fn boot_plans(&self) -> Vec<Plan> {
        let status = self.status_json();
        let dkms = self.path("var/lib/dkms");
        let arch = std::env::consts::ARCH;
        let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
        // Every module's .ko stems, from any of its builds (for modules that must not load).
        let mut stems: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for module in list(&dkms).into_iter().filter(|m| dkms.join(m).is_dir()) {
            for version in list(&dkms.join(&module)).into_iter().filter(|v| !v.starts_with("kernel-")) {
                for kernel in list(&dkms.join(&module).join(&version)) {
                    let dir = dkms.join(&module).join(&version).join(kernel).join(arch).join("module");
                    stems.entry(module.clone()).or_default().extend(ko_stems(&dir).into_iter().map(|(s, _)| s));
                }
            }
        }
        let entries = status["modules"].as_array().cloned().unwrap_or_default();
        for m in &entries {
            let text = |key: &str| m[key].as_str().unwrap_or_default().to_owned();
            let (module, kernel, state) = (text("module"), text("kernel"), text("state"));
            let plan =
                plans.entry(kernel.clone()).or_insert_with(|| Plan { kernel: kernel.clone(), ..Plan::default() });
            let version = match state.as_str() {
                "installed" => text("version"),
                "kept" => text("serving"),
                _ => {
                    // Never built anywhere: the kernel's name for the dkms module's own name.
                    let names = stems
                        .get(&module)
                        .filter(|s| !s.is_empty())
                        .cloned()
                        .unwrap_or_else(|| [kernel_name(&module)].into());
                    for ko in names {
                        plan.absent.push((ko, format!("{module}/{}: {state}", text("version"))));
                    }
                    continue;
                }
            };
            let dir = dkms.join(&module).join(&version).join(&kernel).join(arch).join("module");
            let builds = ko_stems(&dir);
            if builds.is_empty() {
                plan.problems.push(format!(
                    "status says {module}/{version} is {state} for {kernel}, but {} has no module",
                    dir.display()
                ));
            }
            for (ko, file) in builds {
                plan.load.push(Expected {
                    module: module.clone(),
                    version: version.clone(),
                    state: state.clone(),
                    sha256: sha256(&file),
                    modversion: modinfo(&file, "version"),
                    srcversion: modinfo(&file, "srcversion"),
                    ko,
                });
            }
        }
        plans
            .into_values()
            .filter(|p| !p.load.is_empty() || !p.problems.is_empty())
            .map(|mut p| {
                let loading: BTreeSet<String> = p.load.iter().map(|e| e.ko.clone()).collect();
                p.absent.retain(|(ko, _)| !loading.contains(ko));
                p
            })
            .collect()
    }

    /// Boots the root's kernel `plan.kernel` and loads the plan's modules.
    pub fn boot(&self, plan: Plan) -> Boot {
        let vmlinuz = self.path(&format!("usr/lib/modules/{}/vmlinuz", plan.kernel));
        let accel = accel(&vmlinuz);
        let mut args = vec![self.root.to_str().unwrap().to_owned(), plan.kernel.clone()];
        args.extend(plan.load.iter().map(|e| e.ko.clone()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = shell_env("ovr_boot_check", &args, &[("OVR_QEMU_ACCEL", &accel)]);
        Boot::parse(plan, ran.status.code(), ran.output)
    }

    /// The boot check of every kernel with a module to load (two boots at a time).
    pub fn boot_check(&self) -> Vec<Boot> {
        let plans = self.boot_plans();
        let mut boots = Vec::new();
        for pair in plans.chunks(2) {
            std::thread::scope(|s| {
                let running: Vec<_> = pair.iter().map(|p| s.spawn(|| self.boot(p.clone()))).collect();
                boots.extend(running.into_iter().map(|h| h.join().expect("a boot check panicked")));
            });
        }
        for boot in &boots {
            println!("{}", boot.summary());
        }
        boots
    }

    /// The boot check passes for every kernel with a module to load, and there is one: every
    /// module `status` says is installed (or kept) loads in its kernel, as that version, and
    /// nothing else of dkms's. Returns the boots (one per kernel, in kernel order).
    pub fn assert_modules_load(&self) -> Vec<Boot> {
        let boots = self.boot_check();
        assert!(!boots.is_empty(), "no kernel of the root has a module to load:\n{:#}", self.status_json());
        for boot in &boots {
            let problems = boot.problems();
            assert!(
                problems.is_empty(),
                "the boot check of {} failed:\n  {}\n{}\n{}",
                boot.kernel(),
                problems.join("\n  "),
                boot.summary(),
                boot.output
            );
        }
        boots
    }
}
