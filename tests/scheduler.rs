//! The parallel scheduler, driven through the binary with the recording fake dkms: dependency
//! order, never two builds of one module version in one dkms tree at once, one CPU budget,
//! output blocks that never interleave, and failures that stop only what depends on them.

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::{dkms_conf, TestRoot, K1, K2};

const K3: &str = "6.1.0-47-rt-amd64";

/// One build as the fake recorded it: module/version, kernel, dkms tree, start and end.
#[derive(Debug, Clone)]
struct Build {
    module: String,
    kernel: String,
    tree: String,
    start: f64,
    end: f64,
}

fn builds(times: &std::path::Path) -> Vec<Build> {
    let text = fs::read_to_string(times).unwrap_or_default();
    let mut open: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    let mut done = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let key = (f[1].to_owned(), f[2].to_owned(), f[3].to_owned());
        let t: f64 = f[4].parse().unwrap();
        if f[0] == "start" {
            open.insert(key, t);
        } else {
            let start = open.remove(&key).expect("end without start");
            done.push(Build { module: key.0, kernel: key.1, tree: key.2, start, end: t });
        }
    }
    assert!(open.is_empty(), "builds that never ended: {open:?}");
    done
}

fn overlaps(a: &Build, b: &Build) -> bool {
    a.start < b.end && b.start < a.end
}

/// A root with three kernels with headers and the signing key dkms would have made already.
fn three_kernels() -> TestRoot {
    let t = TestRoot::with_two_kernels();
    t.kernel("linux-rt", K3).headers("linux-rt-headers", K3);
    fs::create_dir_all(t.path("var/lib/dkms")).unwrap();
    fs::write(t.path("var/lib/dkms/mok.key"), "key").unwrap();
    fs::write(t.path("var/lib/dkms/mok.pub"), "cert").unwrap();
    t
}

fn env<'a>(t: &'a TestRoot, extra: &[(&'a str, &'a str)], times: &'a str, conc: &'a str) -> Vec<(&'a str, &'a str)> {
    let _ = t;
    let mut e = vec![("FAKE_DKMS_TIMES", times), ("FAKE_DKMS_CONCURRENCY_LOG", conc)];
    e.extend_from_slice(extra);
    e
}

#[test]
fn one_module_version_for_three_kernels_builds_in_parallel_but_never_twice_in_one_tree() {
    let t = three_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    let times = t.scratch().join("times");
    let conc = t.scratch().join("concurrency");
    let (times_s, conc_s) = (times.display().to_string(), conc.display().to_string());
    let run = t.run_env(
        &["-j", "3", "install"],
        "usr/src/hello-1.0/dkms.conf\n",
        &env(&t, &[("FAKE_DKMS_SLEEP", "0.4")], &times_s, &conc_s),
    );
    run.assert_code(0);
    assert_eq!(fs::read_to_string(&conc).unwrap_or_default(), "", "two builds shared one dkms tree\n{run}");
    for k in [K1, K2, K3] {
        assert_eq!(t.installed_for("hello", k).as_deref(), Some("1.0"), "{k}\n{run}");
        assert!(t.ko_installed("hello", k), "{k}");
    }
    let b = builds(&times);
    assert_eq!(b.len(), 3, "{b:?}");
    // The point of private trees: the three builds ran at the same time, each in its own tree.
    assert!(
        overlaps(&b[0], &b[1]) || overlaps(&b[1], &b[2]) || overlaps(&b[0], &b[2]),
        "builds ran one after another: {b:?}"
    );
    for x in &b {
        for y in &b {
            if !std::ptr::eq(x, y) && overlaps(x, y) {
                assert_ne!(x.tree, y.tree, "{x:?} and {y:?} overlapped in one tree");
            }
        }
    }
    // Nothing of the private trees is left behind in the dkms tree.
    let tree: Vec<String> = fs::read_dir(t.path("var/lib/dkms/hello/1.0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(tree.iter().all(|n| [K1, K2, K3, "source", "build"].contains(&n.as_str())), "{tree:?}");
}

#[test]
fn the_fake_detects_two_builds_of_one_module_version_in_one_tree() {
    // Proof that the test above would fail if dkms-hook ran two builds of one module version in
    // one tree at once: two fake dkms doing exactly that trip the detector.
    let t = three_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    let conc = t.scratch().join("concurrency");
    let spawn = |k: &str| {
        let mut cmd = std::process::Command::new(t.fake_dkms());
        cmd.args(["install", "--no-depmod", "-m", "hello", "-v", "1.0", "-k", k]);
        cmd.args(t.relocation_flags(Some(k)));
        cmd.env("FAKE_ROOT", t.root()).env("FAKE_DKMS_SLEEP", "0.5").env("FAKE_DKMS_CONCURRENCY_LOG", &conc);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        cmd.spawn().unwrap()
    };
    let mut a = spawn(K1);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut b = spawn(K2);
    let (ra, rb) = (a.wait().unwrap(), b.wait().unwrap());
    assert!(ra.success());
    assert_eq!(rb.code(), Some(99));
    assert!(fs::read_to_string(&conc).unwrap().contains("CONCURRENT"));
}

#[test]
fn build_depends_are_installed_before_their_dependents_on_each_kernel() {
    let t = three_kernels();
    t.module_pkg("base-dkms", "base-1", &dkms_conf("base", "1"));
    t.module_pkg("top-dkms", "top-1", &format!("{}BUILD_DEPENDS[0]=\"base\"\n", dkms_conf("top", "1")));
    t.module_pkg("other-dkms", "other-1", &dkms_conf("other", "1"));
    let times = t.scratch().join("times");
    let conc = t.scratch().join("concurrency");
    let (times_s, conc_s) = (times.display().to_string(), conc.display().to_string());
    let run = t.run_env(
        &["-j", "4", "install"],
        "usr/src/base-1/dkms.conf\nusr/src/other-1/dkms.conf\nusr/src/top-1/dkms.conf\n",
        &env(&t, &[("FAKE_DKMS_SLEEP", "0.2")], &times_s, &conc_s),
    );
    // The fake exits 13 when a BUILD_DEPENDS module is not installed for the kernel in the tree
    // it builds in, as dkms >= 3.1 does.
    run.assert_code(0);
    let b = builds(&times);
    for k in [K1, K2, K3] {
        let base = b.iter().find(|x| x.module == "base/1" && x.kernel == k).unwrap();
        let top = b.iter().find(|x| x.module == "top/1" && x.kernel == k).unwrap();
        assert!(top.start >= base.end, "top built before base was installed for {k}: {b:?}");
        assert_eq!(t.installed_for("top", k).as_deref(), Some("1"));
    }
    assert!(
        b.iter().any(|x| b.iter().any(|y| x.module != y.module && overlaps(x, y))),
        "nothing ran in parallel: {b:?}"
    );
}

#[test]
fn a_failure_stops_only_the_jobs_that_depend_on_it() {
    let t = three_kernels();
    t.module_pkg("base-dkms", "base-1", &dkms_conf("base", "1"));
    t.module_pkg("top-dkms", "top-1", &format!("{}BUILD_DEPENDS[0]=\"base\"\n", dkms_conf("top", "1")));
    t.module_pkg("other-dkms", "other-1", &dkms_conf("other", "1"));
    let fail = format!("base/1/{K1}=10");
    let run = t.run_env(
        &["-j", "2", "install"],
        "usr/src/base-1/dkms.conf\nusr/src/other-1/dkms.conf\nusr/src/top-1/dkms.conf\n",
        &[("FAKE_DKMS_FAIL", fail.as_str())],
    );
    run.assert_code(1);
    run.expect_line(&["base/1 for 6.1.0-47-amd64", "failed"]);
    run.expect_line(&["top/1 for 6.1.0-47-amd64", "not built", "base/1 for 6.1.0-47-amd64"]);
    assert_eq!(t.installed_for("top", K1), None);
    for k in [K1, K2, K3] {
        assert_eq!(t.installed_for("other", k).as_deref(), Some("1"), "{k}\n{run}");
    }
    for k in [K2, K3] {
        assert_eq!(t.installed_for("base", k).as_deref(), Some("1"), "{k}\n{run}");
        assert_eq!(t.installed_for("top", k).as_deref(), Some("1"), "{k}\n{run}");
    }
    // Every job is reported exactly once: 9 jobs, numbered (1/9) … (9/9).
    for i in 1..=9 {
        assert_eq!(run.count_lines(&format!("({i}/9)")), 1, "job {i}\n{run}");
    }
}

#[test]
fn parallel_output_never_interleaves() {
    let t = three_kernels();
    for m in ["a", "b", "c"] {
        t.module_pkg(&format!("{m}-dkms"), &format!("{m}-1"), &dkms_conf(m, "1"));
    }
    let run = t.run_env(
        &["-v", "-j", "3", "install"],
        "usr/src/a-1/dkms.conf\nusr/src/b-1/dkms.conf\nusr/src/c-1/dkms.conf\n",
        &[("FAKE_DKMS_CHATTER", "15")],
    );
    run.assert_code(0);
    // Each job's chatter is one contiguous block of 15 lines in the output.
    let lines: Vec<&str> = run.stdout.lines().collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(rest) = lines[i].trim().strip_prefix("chatter ") {
            let job = rest.split(" line ").next().unwrap().to_owned();
            assert!(seen.insert(job.clone()), "output of {job} is split\n{}", run.stdout);
            let mut n = 0;
            while i < lines.len() && lines[i].trim().starts_with(&format!("chatter {job} line")) {
                n += 1;
                i += 1;
            }
            assert_eq!(n, 15, "output of {job} is interleaved\n{}", run.stdout);
        } else {
            i += 1;
        }
    }
    assert_eq!(seen.len(), 9, "{}", run.stdout);
}

#[test]
fn each_dkms_gets_a_share_of_the_cores() {
    let t = three_kernels();
    for m in ["a", "b", "c", "d"] {
        t.module_pkg(&format!("{m}-dkms"), &format!("{m}-1"), &dkms_conf(m, "1"));
    }
    let cores = std::thread::available_parallelism().unwrap().get();
    let run = t.run(
        &["-j", "2", "install"],
        "usr/src/a-1/dkms.conf\nusr/src/b-1/dkms.conf\nusr/src/c-1/dkms.conf\nusr/src/d-1/dkms.conf\n",
    );
    run.assert_code(0);
    let builds: Vec<_> = run.calls.iter().filter(|c| matches!(c.action(), Some("install") | Some("build"))).collect();
    // 12 jobs; a private build makes a `build` and an `install` call.
    assert!(builds.len() >= 12, "{run}");
    let share = (cores / 2).max(1);
    for call in &builds {
        let j: usize = call.value("-j").unwrap_or_else(|| panic!("no -j in {call:?}")).parse().unwrap();
        // Two at a time, each with half the cores; the last job alone may take them all.
        assert!(j == share || j == cores, "-j {j} with {cores} cores: {call:?}");
    }
}

/// dkms creates its signing key during its first signing build, so while there is none, installs
/// start one at a time; but where dkms never makes one (signing off, or a key kept elsewhere)
/// parallelism comes back as soon as one install has succeeded.
#[test]
fn installs_run_in_parallel_when_dkms_never_creates_a_signing_key() {
    let t = TestRoot::with_two_kernels();
    for m in ["a", "b", "c", "d"] {
        t.module_pkg(&format!("{m}-dkms"), &format!("{m}-1"), &dkms_conf(m, "1"));
    }
    assert!(!t.path("var/lib/dkms/mok.key").exists());
    let times = t.scratch().join("times");
    let conc = t.scratch().join("concurrency");
    let (times_s, conc_s) = (times.display().to_string(), conc.display().to_string());
    let run = t.run_env(
        &["-j", "2", "install"],
        "usr/src/a-1/dkms.conf\nusr/src/b-1/dkms.conf\nusr/src/c-1/dkms.conf\nusr/src/d-1/dkms.conf\n",
        &env(&t, &[("FAKE_DKMS_SLEEP", "0.3")], &times_s, &conc_s),
    );
    run.assert_code(0);
    assert!(!t.path("var/lib/dkms/mok.key").exists(), "the fake dkms never signs");
    let builds = builds(&times);
    assert_eq!(builds.len(), 8, "{run}");
    let first_end = builds.iter().map(|b| b.end).fold(f64::INFINITY, f64::min);
    // Before the first install is over, it runs alone.
    assert!(builds.iter().filter(|b| b.start < first_end).count() == 1, "{builds:?}");
    // After that, two at a time.
    let overlapping = builds.iter().enumerate().any(|(i, a)| builds[i + 1..].iter().any(|b| overlaps(a, b)));
    assert!(overlapping, "no two installs ever ran at once: {builds:?}\n{run}");
}
