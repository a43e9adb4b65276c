//! `dkms-hook lint --build` with the real dkms against the real headers of two Debian kernels in a
//! fixture root (and a third kernel without headers): a module that builds, one that does not
//! compile, one BUILD_EXCLUSIVE limits to one kernel, and one whose Makefile builds for another
//! kernel than dkms asks for. Each kernel's outcome is reported; nothing is installed and nothing
//! is left behind (no private tree, no extracted sources, no signing key, nothing in the root's or
//! the host's dkms tree).
//!
//! Without root, dkms or the headers this tier cannot run: it follows the common skip rule
//! (fails under CI, reports itself skipped elsewhere).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::packages::real_module_package;
use common::{Run, TestRoot, K1, K_CLOUD};

const K_RT: &str = "6.1.0-47-rt-amd64";

/// Two kernels with real headers and one without any.
fn root() -> TestRoot {
    let t = TestRoot::new();
    fs::set_permissions(t.scratch(), fs::Permissions::from_mode(0o755)).unwrap();
    t.kernel("linux", K1).headers("linux-headers", K1).real_headers(K1);
    t.kernel("linux-cloud", K_CLOUD).headers("linux-cloud-headers", K_CLOUD).real_headers(K_CLOUD);
    t.kernel("linux-rt", K_RT);
    t
}

/// Whether the real dkms and the headers are here (the common skip rule).
fn require() -> bool {
    common::skip::can_run("lint --build", common::skip::real_dkms_missing(&[K1, K_CLOUD]))
}

/// The TMPDIR lint runs with: in the test's directory, readable by nobody.
fn tmp_dir(t: &TestRoot) -> PathBuf {
    let tmp = t.scratch().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

/// Nothing of a lint run is left: its temporary directory is empty, the root's dkms tree and
/// module directories and the host's signing key are as they were.
#[track_caller]
fn assert_nothing_left(t: &TestRoot, host_key_before: bool, run: &str) {
    let left: Vec<_> = fs::read_dir(tmp_dir(t)).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "lint left {left:?} in its temporary directory\n{run}");
    assert_eq!(Path::new(HOST_KEY).exists(), host_key_before, "lint must not make the host's signing key\n{run}");
    let tree: Vec<_> = fs::read_dir(t.path("var/lib/dkms")).unwrap().collect();
    assert!(tree.is_empty(), "lint changed the root's dkms tree\n{run}");
    for k in [K1, K_CLOUD] {
        assert!(!t.path(&format!("usr/lib/modules/{k}/updates")).exists(), "lint installed something\n{run}");
    }
    assert!(!t.path("var/lib/dkms-hook").exists(), "{run}");
}

/// The signing key dkms makes on the host when nothing tells it another.
const HOST_KEY: &str = "/var/lib/dkms/mok.key";

/// `dkms-hook --root R lint --build ARGS…` with the real dkms and TMPDIR in the test's directory;
/// checks that nothing was left behind.
fn lint_build(t: &TestRoot, args: &[&str]) -> Run {
    let tmp = tmp_dir(t);
    let host_key_before = Path::new(HOST_KEY).exists();
    let mut argv = vec!["--root", t.root().to_str().unwrap(), "--dkms", "dkms", "lint", "--build"];
    argv.extend(args);
    let run = t.run_raw(&argv, "", &[("TMPDIR", tmp.to_str().unwrap())]);
    assert_nothing_left(t, host_key_before, &run.to_string());
    run
}

fn package(t: &TestRoot, name: &str) -> PathBuf {
    real_module_package(&t.scratch().join("packages"), name, "1.0")
}

#[test]
fn builds_each_module_for_every_kernel_with_headers_and_judges_the_result() {
    if !require() {
        return;
    }
    let t = root();
    let packages: Vec<PathBuf> = ["hello", "cloudonly", "unamemod"].iter().map(|n| package(&t, n)).collect();
    let mut args = vec!["--json"];
    args.extend(packages.iter().map(|p| p.to_str().unwrap()));
    let run = lint_build(&t, &args);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{run}"));
    let by_name = |name: &str| {
        json["packages"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{run}"))
    };
    let outcomes = |name: &str| -> Vec<(String, String)> {
        by_name(name)["builds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["kernel"].as_str().unwrap().to_owned(), b["result"].as_str().unwrap().to_owned()))
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter().map(|(k, r)| (k.to_string(), r.to_string())).collect()
    };
    let build_tags = |name: &str| -> Vec<String> {
        by_name(name)["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["tag"].as_str().unwrap().to_owned())
            .filter(|t| t.starts_with("build-"))
            .collect()
    };
    // Kernels in version order: the amd64, the cloud and the rt kernel (no headers).
    assert_eq!(outcomes("hello-dkms"), pairs(&[(K1, "built"), (K_CLOUD, "built"), (K_RT, "no_headers")]), "{run}");
    assert!(build_tags("hello-dkms").is_empty(), "{run}");
    let rt = &by_name("hello-dkms")["builds"][2];
    assert_eq!(rt["headers_package"], "linux-rt-headers", "{run}");
    // BUILD_EXCLUSIVE_KERNEL: skipped, which is no error.
    assert_eq!(outcomes("cloudonly-dkms"), pairs(&[(K1, "skipped"), (K_CLOUD, "built"), (K_RT, "no_headers")]));
    assert!(build_tags("cloudonly-dkms").is_empty(), "{run}");
    // Its Makefile builds for the amd64 kernel whatever dkms asks: right by chance for that one.
    assert_eq!(outcomes("unamemod-dkms"), pairs(&[(K1, "built"), (K_CLOUD, "wrong_kernel"), (K_RT, "no_headers")]));
    assert_eq!(build_tags("unamemod-dkms"), ["build-wrong-kernel"], "{run}");
    let wrong = by_name("unamemod-dkms")["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["tag"] == "build-wrong-kernel")
        .unwrap()
        .clone();
    assert_eq!(wrong["level"], "error");
    let message = wrong["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("unamemod/1.0 for {K_CLOUD}")) && message.contains(&format!("vermagic {K1}")),
        "{message}"
    );
    run.assert_code(1);
}

#[test]
fn a_module_that_does_not_compile_shows_the_compiler_error_for_each_kernel() {
    if !require() {
        return;
    }
    let t = root();
    let broken = package(&t, "broken");
    let run = lint_build(&t, &[broken.to_str().unwrap()]);
    run.assert_code(1);
    run.expect_line(&["==> Building broken/1.0 for 3 kernels in a private dkms tree"]);
    for k in [K1, K_CLOUD] {
        let line = run.expect_line(&[
            "error: broken-dkms [build-failed]: ",
            &format!("broken/1.0 for {k}: dkms exit 10, the module build (make) failed"),
        ]);
        assert!(line.contains("fix the first error shown below"), "{line}");
    }
    // The compiler's error, under each failure, naming the file as the package has it.
    assert_eq!(run.count_lines("usr/src/broken-1.0/broken.c:5:46: error: "), 2, "{run}");
    assert!(!run.stdout.contains("dkms-hook-lint-build."), "{run}");
    run.expect_line(&[&format!(
        "broken/1.0 for {K_RT}: not built: the kernel has no headers (install linux-rt-headers)"
    )]);
    run.expect_line(&["==> broken-dkms 1.0-1: 2 errors, 1 warning"]);
}

#[test]
fn a_stopping_signal_ends_the_build_and_leaves_nothing_behind() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    if !require() {
        return;
    }
    let t = root();
    let hello = package(&t, "hello");
    let tmp = tmp_dir(&t);
    let host_key_before = Path::new(HOST_KEY).exists();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dkms-hook"))
        .args(["--root", t.root().to_str().unwrap(), "--dkms", "dkms", "lint", "--build"])
        .arg(&hello)
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The first build is running once its heading is out.
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("==> Building hello/1.0") {
            break;
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{seen:#?}");
    assert_nothing_left(&t, host_key_before, &seen.join("\n"));
    assert!(
        seen.iter().any(|l| l.starts_with("==> Stopped by SIGTERM: not every package or build was checked")),
        "{seen:#?}"
    );
    assert!(!seen.iter().any(|l| l.contains("built in")), "{seen:#?}");
}
