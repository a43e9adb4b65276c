//! The install hook (`dkms-hook install`, PostTransaction): which (module, version, kernel) jobs it
//! runs for a transaction's targets, how it reports each outcome, and when it runs depmod.

mod common;

use common::*;

fn hello(t: &TestRoot) {
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
}

fn world(t: &TestRoot) {
    t.module_pkg("world-dkms", "world-2.0", &dkms_conf("world", "2.0"));
}

/// Index of the first call matching `pred`, or a panic naming `what`.
#[track_caller]
fn index(run: &Run, what: &str, pred: impl Fn(&Call) -> bool) -> usize {
    run.calls.iter().position(pred).unwrap_or_else(|| panic!("no call for {what}\n{run}"))
}

/// Asserts depmod ran exactly once for each of `kernels` (and for no other), each after every dkms
/// install for that kernel.
#[track_caller]
fn assert_depmod_once_after_installs(run: &Run, kernels: &[&str]) {
    let mut got = run.depmod_kernels();
    got.sort();
    let mut want: Vec<String> = kernels.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "depmod must run once per changed kernel\n{run}");
    for k in kernels {
        let depmod = index(run, &format!("depmod {k}"), |c| c.program == "depmod" && c.depmod_kernel() == Some(k));
        let last_install = run.calls.iter().rposition(|c| c.program == "dkms" && c.kernel() == Some(k)).unwrap_or(0);
        assert!(last_install < depmod, "depmod {k} ran before the last dkms call for {k}\n{run}");
    }
}

#[test]
fn module_install_builds_for_both_kernels() {
    let t = TestRoot::with_two_kernels();
    hello(&t);

    let run = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert_eq!(sorted(run.installs()), vec![job("hello", "1.0", K1), job("hello", "1.0", K2)], "{run}");
    assert_relocated(&t, &run);
    for k in [K1, K2] {
        assert!(t.ko_installed("hello", k), "hello.ko not installed for {k}\n{run}");
        assert_eq!(t.installed_for("hello", k).as_deref(), Some("1.0"));
        let line = run.expect_line(&["hello/1.0", k]);
        assert!(line.contains("installed"), "job line does not say installed: {line}\n{run}");
    }
    assert_depmod_once_after_installs(&run, &[K1, K2]);
}

#[test]
fn depmod_runs_once_per_kernel_after_all_its_jobs() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    world(&t);

    let run = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\nusr/src/world-2.0/dkms.conf\n");

    run.assert_code(0);
    assert_eq!(run.installs().len(), 4, "{run}");
    assert_depmod_once_after_installs(&run, &[K1, K2]);
}

#[test]
fn new_kernel_gets_every_module_once() {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    hello(&t);
    world(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("world", "2.0", K1);
    // The transaction installs linux-lts and linux-lts-headers: both of its triggers fire.
    t.kernel("linux-lts", K2).headers("linux-lts-headers", K2);

    let run = t.run(&["install"], format!("usr/lib/modules/{K2}/build/include/\nusr/lib/modules/{K2}/modules.order\n"));

    run.assert_code(0);
    assert_eq!(sorted(run.installs()), vec![job("hello", "1.0", K2), job("world", "2.0", K2)], "{run}");
    assert!(t.ko_installed("hello", K2) && t.ko_installed("world", K2), "{run}");
    assert_depmod_once_after_installs(&run, &[K2]);
}

#[test]
fn headers_added_for_one_kernel_builds_only_for_it() {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.kernel("linux-lts", K2);
    hello(&t);
    t.dkms_installed("hello", "1.0", K1);
    // The transaction installs linux-lts-headers only.
    t.headers("linux-lts-headers", K2);

    let run = t.run(&["install"], format!("usr/lib/modules/{K2}/build/include/\n"));

    run.assert_code(0);
    assert_eq!(run.installs(), vec![job("hello", "1.0", K2)], "{run}");
    assert_relocated(&t, &run);
    assert!(t.ko_installed("hello", K2), "{run}");
    assert_eq!(run.count_lines("warning"), 0, "{run}");
    assert_depmod_once_after_installs(&run, &[K2]);
}

#[test]
fn kernel_without_headers_gets_one_warning_and_no_job() {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.kernel("linux-lts", K2);
    hello(&t);

    let run = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert_eq!(run.installs(), vec![job("hello", "1.0", K1)], "{run}");
    assert_eq!(run.count_lines("no headers"), 1, "one warning for the kernel without headers\n{run}");
    let warning = run.expect_line(&["no headers", K2]);
    assert!(warning.contains("warning"), "{warning}\n{run}");
    assert!(warning.contains("linux-lts-headers"), "the warning must name the package to install: {warning}\n{run}");
    assert!(!t.ko_installed("hello", K2));
    assert!(!run.depmod_kernels().contains(&K2.to_owned()), "{run}");
}

#[test]
fn new_kernel_without_headers_warns_and_runs_nothing() {
    let t = TestRoot::new();
    t.kernel("linux-lts", K2);
    hello(&t);

    let run = t.run(&["install"], format!("usr/lib/modules/{K2}/modules.order\n"));

    run.assert_code(0);
    assert!(run.dkms().is_empty(), "{run}");
    let warning = run.expect_line(&["no headers", K2]);
    assert!(warning.contains("linux-lts-headers"), "{warning}\n{run}");
}

#[test]
fn headers_package_without_include_dir_on_disk_is_no_headers() {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.kernel("linux-lts", K2).headers("linux-lts-headers", K2);
    std::fs::remove_dir_all(t.path(&format!("usr/lib/modules/{K2}/build/include"))).unwrap();
    hello(&t);

    let run = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert_eq!(run.installs(), vec![job("hello", "1.0", K1)], "{run}");
    let warning = run.expect_line(&["no headers", K2]);
    assert!(warning.contains("linux-lts-headers"), "{warning}\n{run}");
}

/// `build` as a symlink to a headers tree is headers: shipped that way by a headers package, or
/// made by hand for a self-built kernel (then no package owns it, and status shows where it leads).
#[test]
fn a_build_symlink_to_a_headers_tree_is_headers() {
    let t = TestRoot::new();
    t.kernel("linux", K1).kernel("linux-custom", K2);
    for (kver, package) in [(K1, Some("linux-headers")), (K2, None)] {
        let tree = format!("usr/src/linux-headers-{kver}");
        let entries = [
            (format!("{tree}/Makefile"), "# fake kernel Makefile\n".to_owned()),
            (format!("{tree}/include/generated/utsrelease.h"), format!("#define UTS_RELEASE \"{kver}\"\n")),
            (format!("usr/lib/modules/{kver}/build"), String::new()),
        ];
        match package {
            Some(name) => {
                let entries: Vec<(&str, &str)> = entries.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
                t.package(name, "1.0-1", &entries);
            }
            None => {
                for (path, content) in &entries {
                    std::fs::create_dir_all(t.path(path).parent().unwrap()).unwrap();
                    std::fs::write(t.path(path), content).unwrap();
                }
            }
        }
        let build = t.path(&format!("usr/lib/modules/{kver}/build"));
        std::fs::remove_file(&build).unwrap();
        std::os::unix::fs::symlink(format!("../../../src/linux-headers-{kver}"), &build).unwrap();
    }
    hello(&t);

    let run = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert_eq!(sorted(run.installs()), sorted(vec![job("hello", "1.0", K1), job("hello", "1.0", K2)]), "{run}");
    assert!(run.line(&["no headers"]).is_none(), "{run}");
    let status = t.run(&["status"], "");
    status.expect_line(&[K1, "headers from linux-headers"]);
    status.expect_line(&[K2, "headers from", &format!("usr/src/linux-headers-{K2}")]);
}

#[test]
fn leftover_kernel_directory_is_not_a_kernel() {
    const OLD: &str = "6.0.0-12-amd64";
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.leftover_kernel_dir(OLD);
    hello(&t);

    let run = t.run(
        &["install"],
        format!(
            "usr/src/hello-1.0/dkms.conf\nusr/lib/modules/{OLD}/build/include/\nusr/lib/modules/{OLD}/modules.order\n"
        ),
    );

    run.assert_code(0);
    assert_eq!(run.installs(), vec![job("hello", "1.0", K1)], "{run}");
    assert!(run.calls.iter().all(|c| !c.args.iter().any(|a| a.contains(OLD))), "nothing may run for {OLD}\n{run}");
    assert_eq!(run.count_lines("warning"), 0, "a leftover directory is not a kernel without headers\n{run}");
    assert_eq!(run.count_lines("error"), 0, "{run}");
    assert_depmod_once_after_installs(&run, &[K1]);
}

#[test]
fn hyphenated_names_and_versions_come_from_dkms_conf() {
    let t = TestRoot::with_two_kernels();
    let conf = "_base=0.9\n\
                PACKAGE_NAME=\"xpad-neo-x\"\n\
                PACKAGE_VERSION=\"${_base}-r12-g3a1b\"\n\
                BUILT_MODULE_NAME[0]=\"hid-xpadneo\"\n\
                DEST_MODULE_LOCATION[0]=\"/kernel/drivers/hid\"\n\
                MAKE[0]=\"make -C src KERNEL_SOURCE_DIR=${kernel_source_dir} KVER=$kernelver modules\"\n\
                AUTOINSTALL=\"yes\"\n";
    t.module_pkg("xpad-neo-x-dkms-git", "xpad-neo-x-0.9-r12-g3a1b", conf);

    // No newline after the last target.
    let run = t.run(&["install"], "usr/src/xpad-neo-x-0.9-r12-g3a1b/dkms.conf");

    run.assert_code(0);
    assert_eq!(
        sorted(run.installs()),
        vec![job("xpad-neo-x", "0.9-r12-g3a1b", K1), job("xpad-neo-x", "0.9-r12-g3a1b", K2)],
        "{run}"
    );
    for call in run.dkms() {
        assert_eq!(call.value("-m"), Some("xpad-neo-x"), "{call}");
        assert_eq!(call.value("-v"), Some("0.9-r12-g3a1b"), "{call}");
    }
    for k in [K1, K2] {
        assert!(t.ko_installed("hid-xpadneo", k), "{run}");
        let line = run.expect_line(&["xpad-neo-x/0.9-r12-g3a1b", k]);
        assert!(line.contains("installed"), "{line}\n{run}");
    }
}

#[test]
fn build_exclusive_kernel_is_skipped_not_failed() {
    let t = TestRoot::with_two_kernels();
    let conf = format!("{}BUILD_EXCLUSIVE_KERNEL=\"^6\\.1\\.\"\n", dkms_conf("hello", "1.0"));
    t.module_pkg("hello-dkms", "hello-1.0", &conf);

    let run = t.run(&["install"], "usr/src/hello-1.0/dkms.conf\n");

    run.assert_code(0);
    assert!(t.ko_installed("hello", K1), "{run}");
    assert!(!t.ko_installed("hello", K2), "{run}");
    assert!(run.expect_line(&["hello/1.0", K1]).contains("installed"), "{run}");
    let line = run.expect_line(&["hello/1.0", K2]);
    assert!(line.contains("skipped"), "BUILD_EXCLUSIVE must read as skipped: {line}\n{run}");
    assert!(!line.contains("failed"), "{line}\n{run}");
}

#[test]
fn dkms_exit_77_is_skipped_not_failed() {
    // BUILD_EXCLUSIVE_CONFIG: only dkms can tell, and it says so with exit status 77.
    let t = TestRoot::with_two_kernels();
    hello(&t);

    let run =
        t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &[("FAKE_DKMS_FAIL", &format!("hello/1.0/{K2}=77"))]);

    run.assert_code(0);
    assert_eq!(sorted(run.installs()), vec![job("hello", "1.0", K1), job("hello", "1.0", K2)], "{run}");
    let line = run.expect_line(&["hello/1.0", K2]);
    assert!(line.contains("skipped"), "{line}\n{run}");
    assert!(!line.contains("failed"), "{line}\n{run}");
    assert!(run.expect_line(&["hello/1.0", K1]).contains("installed"), "{run}");
}

#[test]
fn one_failing_build_does_not_stop_the_others() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.module_pkg("broken-dkms", "broken-2.0", &dkms_conf("broken", "2.0"));

    let run = t.run_env(
        &["install"],
        "usr/src/broken-2.0/dkms.conf\nusr/src/hello-1.0/dkms.conf\n",
        &[("FAKE_DKMS_FAIL", &format!("broken/2.0/{K1}=10"))],
    );

    run.assert_code(1);
    assert_eq!(
        sorted(run.installs()),
        vec![job("broken", "2.0", K1), job("broken", "2.0", K2), job("hello", "1.0", K1), job("hello", "1.0", K2)],
        "every job runs even after a failure\n{run}"
    );
    assert!(t.ko_installed("hello", K1) && t.ko_installed("hello", K2) && t.ko_installed("broken", K2), "{run}");
    assert!(!t.ko_installed("broken", K1));

    let line = run.expect_line(&["broken/2.0", K1]);
    assert!(line.contains("failed"), "{line}\n{run}");
    assert!(run.expect_line(&["broken/2.0", K2]).contains("installed"), "{run}");
    // The tail of make.log and where the whole of it is.
    run.expect_line(&["broken.c:3:1: error: expected ';'", K1]);
    // The path it names holds the whole log (wherever the binary keeps it).
    let logs: Vec<&str> = run
        .stdout
        .split_whitespace()
        .filter(|w| w.starts_with('/') && w.contains(".log"))
        .map(|w| w.trim_end_matches([':', ',', ')', '.']))
        .filter(|w| std::fs::read_to_string(w).is_ok_and(|text| text.contains("broken.c:3:1: error")))
        .collect();
    assert!(!logs.is_empty(), "the report must name a log file holding the build error\n{run}");
    assert!(
        !run.output().lines().any(|l| l.trim_end().ends_with("filler line 1")),
        "only the last lines of the log are shown\n{run}"
    );
    // The kernels still got their working modules registered with depmod.
    let mut depmod = run.depmod_kernels();
    depmod.sort();
    assert_eq!(depmod, vec![K1.to_owned(), K2.to_owned()], "{run}");
}

#[test]
fn module_built_for_the_wrong_kernel_fails() {
    let t = TestRoot::with_two_kernels();
    hello(&t);

    let run = t.run_env(
        &["install"],
        "usr/src/hello-1.0/dkms.conf\n",
        &[("FAKE_DKMS_VERMAGIC", &format!("hello/1.0/{K1}=5.10.0-30-amd64"))],
    );

    run.assert_code(1);
    let line = run.expect_line(&["hello/1.0", K1]);
    assert!(line.contains("failed"), "{line}\n{run}");
    assert!(run.output().contains("wrong kernel"), "the failure must be named\n{run}");
    assert!(run.expect_line(&["hello/1.0", K2]).contains("installed"), "{run}");
    // The module built for another kernel does not stay installed for this one (removed
    // through dkms); the good one does.
    assert_eq!(t.installed_for("hello", K1), None, "{run}");
    assert!(!t.ko_installed("hello", K1), "{run}");
    assert!(run.calls.iter().any(|c| c.action() == Some("remove") && c.kernel() == Some(K1)), "{run}");
    assert_eq!(t.installed_for("hello", K2).as_deref(), Some("1.0"));
}

#[test]
fn build_depends_are_installed_first() {
    // aaa-dep needs zzz-base: alphabetical or stdin order would be wrong. The fake dkms refuses
    // (exit 13) to build aaa-dep for a kernel that has no zzz-base installed.
    let t = TestRoot::with_two_kernels();
    let dep_conf = format!("{}BUILD_DEPENDS=(\"zzz-base\")\n", dkms_conf("aaa-dep", "1.0"));
    t.module_pkg("aaa-dep-dkms", "aaa-dep-1.0", &dep_conf);
    t.module_pkg("zzz-base-dkms", "zzz-base-3.1", &dkms_conf("zzz-base", "3.1"));

    let run = t.run(&["install"], "usr/src/aaa-dep-1.0/dkms.conf\nusr/src/zzz-base-3.1/dkms.conf\n");

    run.assert_code(0);
    assert_eq!(run.installs().len(), 4, "{run}");
    for k in [K1, K2] {
        let base = run
            .first_call(&["install"], "zzz-base", k)
            .unwrap_or_else(|| panic!("zzz-base never installed for {k}\n{run}"));
        let dep = run
            .first_call(&["build", "install"], "aaa-dep", k)
            .unwrap_or_else(|| panic!("aaa-dep never built for {k}\n{run}"));
        assert!(base < dep, "zzz-base must be installed before aaa-dep is built for {k}\n{run}");
        assert!(t.ko_installed("aaa-dep", k) && t.ko_installed("zzz-base", k), "{run}");
    }
}

#[test]
fn build_depends_are_respected_for_a_new_kernel() {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    let dep_conf = format!("{}BUILD_DEPENDS=(\"zzz-base\")\n", dkms_conf("aaa-dep", "1.0"));
    t.module_pkg("aaa-dep-dkms", "aaa-dep-1.0", &dep_conf);
    t.module_pkg("zzz-base-dkms", "zzz-base-3.1", &dkms_conf("zzz-base", "3.1"));
    t.dkms_installed("zzz-base", "3.1", K1).dkms_installed("aaa-dep", "1.0", K1);
    t.kernel("linux-lts", K2).headers("linux-lts-headers", K2);

    let run = t.run(&["install"], format!("usr/lib/modules/{K2}/build/include/\nusr/lib/modules/{K2}/modules.order\n"));

    run.assert_code(0);
    let base =
        run.first_call(&["install"], "zzz-base", K2).unwrap_or_else(|| panic!("zzz-base never installed\n{run}"));
    let dep =
        run.first_call(&["build", "install"], "aaa-dep", K2).unwrap_or_else(|| panic!("aaa-dep never built\n{run}"));
    assert!(base < dep, "zzz-base must be installed before aaa-dep is built\n{run}");
    assert!(t.ko_installed("aaa-dep", K2), "{run}");
}

#[test]
fn failing_depmod_fails_the_run() {
    let t = TestRoot::with_two_kernels();
    hello(&t);

    let run = t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &[("FAKE_DEPMOD_FAIL", K2)]);

    run.assert_code(1);
    assert_eq!(run.installs().len(), 2, "{run}");
    let mut depmod = run.depmod_kernels();
    depmod.sort();
    assert_eq!(depmod, vec![K1.to_owned(), K2.to_owned()], "a failing depmod does not stop the next\n{run}");
    run.expect_line(&["depmod", K2, "fail"]);
}

/// `linux` with headers and hello/1.0 installed for it, whose dkms.conf leaves a line in
/// `tmp/evaluated` of the root each time it is read (returned).
fn counted() -> (TestRoot, std::path::PathBuf) {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    let marker = t.path("tmp/evaluated");
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(&marker, "").unwrap();
    std::fs::set_permissions(&marker, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let conf = format!("{}echo read >> {}\n", dkms_conf("hello", "1.0"), marker.display());
    t.module_pkg("hello-dkms", "hello-1.0", &conf);
    t.dkms_installed("hello", "1.0", K1);
    (t, marker)
}

#[test]
fn the_quiet_path_evaluates_no_dkms_conf_and_a_job_evaluates_them_all() {
    let (t, marker) = counted();
    world(&t);
    t.dkms_installed("world", "2.0", K1);
    std::fs::write(&marker, "").unwrap(); // the fixture's fake dkms read it too

    // Headers reinstalled for a kernel that has every module: nothing to do, no dkms.conf read.
    let run = t.run(&["install"], format!("usr/lib/modules/{K1}/build/include/\n"));
    run.assert_code(0);
    assert!(run.dkms().is_empty(), "{run}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "", "a dkms.conf was evaluated on the quiet path\n{run}");

    // A new kernel needs jobs: then every dkms.conf is read, as before.
    t.kernel("linux-lts", K2).headers("linux-lts-headers", K2);
    let run = t.run(&["install"], format!("usr/lib/modules/{K2}/build/include/\n"));
    run.assert_code(0);
    assert_eq!(sorted(run.installs()), vec![job("hello", "1.0", K2), job("world", "2.0", K2)], "{run}");
    assert!(std::fs::read_to_string(&marker).unwrap().contains("read"), "hello's dkms.conf was not read\n{run}");
}

#[test]
fn the_quiet_path_reads_a_module_dkms_registered_from_other_sources() {
    // dkms registered hello/1.0 from a kept copy (its replacement failed): its dkms.conf is read.
    let (t, marker) = counted();
    let kept = t.path("var/lib/dkms-hook/kept/abc");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::copy(t.path("usr/src/hello-1.0/dkms.conf"), kept.join("dkms.conf")).unwrap();
    let source = t.path("var/lib/dkms/hello/1.0/source");
    let _ = std::fs::remove_file(&source);
    std::os::unix::fs::symlink(&kept, &source).unwrap();
    std::fs::write(&marker, "").unwrap(); // the fixture's fake dkms read it too

    let run = t.run(&["install"], format!("usr/lib/modules/{K1}/build/include/\n"));
    run.assert_code(0);
    assert!(std::fs::read_to_string(&marker).unwrap().contains("read"), "hello's dkms.conf was not read\n{run}");
}

/// What `dkms-hook` (the front) logs with RUST_LOG=debug when it answered from the files alone.
const FROM_FILES: &str = "nothing to do, told from the files alone";

/// The shared libraries `bin` names (`readelf -d`).
fn needed(bin: &str) -> String {
    let out = std::process::Command::new("readelf").args(["-d", bin]).output().expect("cannot run readelf");
    assert!(out.status.success(), "readelf -d {bin}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("(NEEDED)")).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_front_answers_the_quiet_path_from_the_files_without_libalpm() {
    // `/usr/bin/dkms-hook` does not load libalpm (nor what libalpm pulls in); the whole program does.
    let (front, full) = (env!("CARGO_BIN_EXE_dkms-hook"), env!("CARGO_BIN_EXE_dkms-hook-full"));
    assert!(!needed(front).contains("libalpm"), "{front} links libalpm:\n{}", needed(front));
    assert!(needed(full).contains("libalpm.so"), "{full} does not link libalpm:\n{}", needed(full));

    // Headers reinstalled for a kernel that has every module: the front says nothing, runs
    // nothing, evaluates no dkms.conf, and exits 0, as the whole program would.
    let (t, marker) = counted();
    std::fs::write(&marker, "").unwrap(); // the fixture's fake dkms read it
    let run = t.run_env(&["install"], headers_target(K1), &[("RUST_LOG", "debug")]);
    run.assert_code(0);
    assert!(run.stderr.contains(FROM_FILES), "{run}");
    assert!(run.calls.is_empty() && run.stdout.is_empty(), "{run}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "", "{run}");
    // The same without the debug log: not a word.
    let run = t.run(&["install"], headers_target(K1));
    run.assert_code(0);
    assert_eq!(run.output(), "", "{run}");
}

#[test]
fn the_front_hands_what_the_files_cannot_tell_to_the_whole_program() {
    let (t, _) = counted();
    let debug = [("RUST_LOG", "debug")];
    // Each case: the whole program answers (the front's line is missing) and says what it says.
    let whole = |run: &Run| {
        run.assert_code(0);
        assert!(!run.stderr.contains(FROM_FILES), "the front answered:\n{run}");
    };
    // Asked to say more than nothing, or to show the plan.
    whole(&t.run_env(&["--verbose", "install"], headers_target(K1), &debug));
    whole(&t.run_env(&["--dry-run", "install"], headers_target(K1), &debug));
    // A module source among the targets (its digest decides).
    whole(&t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &debug));

    // A kernel whose build directory was left behind by its headers package (no Makefile): the
    // whole program sees no headers and says which package to install.
    t.kernel("linux-lts", K2);
    std::fs::create_dir_all(t.path(&format!("usr/lib/modules/{K2}/build/include/generated"))).unwrap();
    t.dkms_installed("hello", "1.0", K2);
    let run = t.run_env(&["install"], format!("usr/lib/modules/{K2}/modules.order\n"), &debug);
    whole(&run);
    assert!(run.output().contains(&format!("no headers for kernel {K2}")), "{run}");

    // Sources dkms has not registered from their directory (no package owns them): the whole
    // program leaves them alone, as ever.
    std::fs::create_dir_all(t.path("usr/src/stray-1")).unwrap();
    std::fs::write(t.path("usr/src/stray-1/dkms.conf"), dkms_conf("stray", "1")).unwrap();
    let run = t.run_env(&["install"], headers_target(K1), &debug);
    whole(&run);
    assert!(run.dkms().is_empty(), "{run}");
    std::fs::remove_dir_all(t.path("usr/src/stray-1")).unwrap();

    // What the guard built for another transaction goes, as the whole program's session drops
    // it (what it built for the running one is handed over: tests/guard.rs); then the front answers.
    std::fs::create_dir_all(t.path("var/lib/dkms-hook/prebuilt/trees")).unwrap();
    let run = t.run_env(&["install"], headers_target(K1), &debug);
    run.assert_code(0);
    assert!(run.stderr.contains(FROM_FILES), "{run}");
    assert!(!t.path("var/lib/dkms-hook/prebuilt").exists(), "the guard's builds of another transaction stay");
}

#[test]
fn the_front_runs_the_whole_program_from_beside_it_with_the_same_arguments_and_targets() {
    // A package's layout: the front in usr/bin, a stand-in for the whole program in
    // usr/lib/dkms-hook that prints its arguments and its stdin.
    let dir = tempfile::tempdir().unwrap();
    let front = dir.path().join("usr/bin/dkms-hook");
    let whole = dir.path().join("usr/lib/dkms-hook/dkms-hook-full");
    for path in [&front, &whole] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    }
    std::fs::copy(env!("CARGO_BIN_EXE_dkms-hook"), &front).unwrap();
    std::fs::write(&whole, "#!/bin/sh\necho \"args: $*\"\necho stdin:\ncat\n").unwrap();
    std::fs::set_permissions(&whole, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(&front)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .env_remove("RUST_LOG")
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // Any other command: the whole program, stdin untouched.
    assert_eq!(run(&["status", "--json"], "x\n"), "args: status --json\nstdin:\nx\n");
    // An install the front cannot answer (here: not a pacman root): the whole program, with the
    // targets the front read.
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_str().unwrap();
    let targets = format!("usr/lib/modules/{K1}/modules.order\n");
    assert_eq!(run(&["--root", root, "install"], &targets), format!("args: --root {root} install\nstdin:\n{targets}"));
}
