//! `dkms-hook status`: the text and JSON reports for every pair state and every kind of item
//! out of place, the exit status (0 all well, 1 otherwise), and that it takes no lock.

mod common;
mod ops;

use std::fs;
use std::time::{Duration, Instant};

use common::*;
use ops::*;

const RT: &str = "6.1.0-47-rt-amd64";

fn hello(t: &TestRoot) {
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
}

#[test]
fn a_system_in_order_is_ok() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);

    let run = t.run(&["status"], "");
    run.assert_code(0);
    let root = t.root().display().to_string();
    run.expect_line(&["  -> hello/1.0 from hello-dkms 1.0-1", &format!("{root}/usr/src/hello-1.0")]);
    run.expect_line(&[&format!("  -> {K1} from linux 1.0-1, headers from linux-headers")]);
    run.expect_line(&[&format!("  -> {K2} from linux-lts 1.0-1, headers from linux-lts-headers")]);
    run.expect_line(&[&format!("  -> hello/1.0 for {K1}: installed")]);
    run.expect_line(&[&format!("  -> hello/1.0 for {K2}: installed")]);
    run.expect_line(&["==> Everything is as it should be"]);
    assert!(run.calls.is_empty(), "status runs no dkms\n{run}");
    // -q: only the verdict when all is well.
    let quiet = t.run(&["-q", "status"], "");
    quiet.assert_code(0);
    assert_eq!(quiet.stdout, "==> Everything is as it should be\n");

    let (code, json, run) = status_json(&t);
    assert_eq!(code, Some(0), "{run}");
    assert_eq!(json["schema"], 1);
    assert_eq!(json["ok"], true);
    assert_eq!(json["problems"], 0);
    assert_eq!(json["root"], root);
    assert!(json["running_kernel"].is_null(), "no running kernel under --root");
    assert_eq!(json["sources"][0]["module"], "hello");
    assert_eq!(json["sources"][0]["package"], "hello-dkms");
    assert_eq!(json["sources"][0]["package_version"], "1.0-1");
    assert_eq!(json["kernels"][0]["kernel"], K1);
    assert_eq!(json["kernels"][0]["headers"], "linux-headers");
    assert_eq!(json["kernels"][0]["running"], false);
    assert_eq!(pair_states(&json), [pair("hello/1.0", K1, "installed"), pair("hello/1.0", K2, "installed")]);
    assert_eq!(json["out_of_place"], serde_json::json!([]));
}

#[test]
fn every_pair_state_with_its_reason() {
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.kernel("linux-lts", K2); // no headers
    t.kernel("linux-rt", RT).headers("linux-rt-headers", RT);
    config(&t, "exclude_kernels = [\"*-rt-*\"]\n");
    for m in ["good", "skipme", "broken", "wrongmagic"] {
        t.module_pkg(&format!("{m}-dkms"), &format!("{m}-1.0"), &dkms_conf(m, "1.0"));
    }
    let fail = format!("skipme/1.0/{K1}=77 broken/1.0/{K1}=10");
    let vermagic = format!("wrongmagic/1.0/{K1}=6.9.9-other");
    let sync = t.run_env(&["-j", "1", "sync"], "", &[("FAKE_DKMS_FAIL", &fail), ("FAKE_DKMS_VERMAGIC", &vermagic)]);
    sync.assert_code(1);
    // Built but not installed, and not built at all.
    t.module_pkg("builtonly-dkms", "builtonly-1.0", &dkms_conf("builtonly", "1.0"));
    t.dkms_built("builtonly", "1.0", K1);
    t.module_pkg("late-dkms", "late-1.0", &dkms_conf("late", "1.0"));

    let run = t.run(&["status"], "");
    run.assert_code(1);
    let broken_log = log_path(&t, &format!("broken_1.0_{K1}.install.log"));
    for (id, state) in [
        ("good/1.0", "installed"),
        ("skipme/1.0", "skipped: BUILD_EXCLUSIVE does not match this kernel"),
        ("broken/1.0", "failed: dkms exit 10, the module build (make) failed: fix the cause, then `dkms-hook sync`"),
        ("wrongmagic/1.0", "wrong vermagic: "),
        ("builtonly/1.0", "built, not installed: run `dkms-hook sync` to install it"),
        ("late/1.0", "missing: run `dkms-hook sync` to build it"),
    ] {
        run.expect_line(&[&format!("  -> {id} for {K1}: {state}")]);
        run.expect_line(&[&format!("  -> {id} for {K2}: missing: no headers: install linux-lts-headers")]);
        run.expect_line(&[&format!("  -> {id} for {RT}: excluded: by the configuration")]);
    }
    run.expect_line(&["wrongmagic/1.0", K1, "vermagic 6.9.9-other", "report it to the packager"]);
    run.expect_line(&[&format!("     log: {}", broken_log.display())]);
    run.expect_line(&[&format!("  -> {K2} from linux-lts 1.0-1, no headers: install linux-lts-headers")]);
    run.expect_line(&[&format!("  -> {RT} from linux-rt 1.0-1, headers from linux-rt-headers, excluded")]);
    // 4 on K1 (failed, wrong vermagic, built, missing) and all 6 on K2.
    run.expect_line(&["==> 10 items need attention"]);

    let (code, json, run) = status_json(&t);
    assert_eq!(code, Some(1), "{run}");
    assert_eq!((json["ok"].as_bool(), json["problems"].as_u64()), (Some(false), Some(10)));
    let k1: Vec<(String, String, String)> = pair_states(&json).into_iter().filter(|p| p.1 == K1).collect();
    assert_eq!(
        k1,
        [
            pair("broken/1.0", K1, "failed"),
            pair("builtonly/1.0", K1, "built"),
            pair("good/1.0", K1, "installed"),
            pair("late/1.0", K1, "missing"),
            pair("skipme/1.0", K1, "skipped"),
            pair("wrongmagic/1.0", K1, "wrong_vermagic"),
        ]
    );
    for p in json["modules"].as_array().unwrap() {
        let want = if p["kernel"] == K2 {
            "missing"
        } else if p["kernel"] == RT {
            "excluded"
        } else {
            continue;
        };
        assert_eq!(p["state"], want, "{p}");
    }
    let broken =
        json["modules"].as_array().unwrap().iter().find(|p| p["module"] == "broken" && p["kernel"] == K1).unwrap();
    assert_eq!(broken["ok"], false);
    assert_eq!(broken["log"], broken_log.display().to_string());
    assert!(broken_log.is_file());
    let skipped =
        json["modules"].as_array().unwrap().iter().find(|p| p["module"] == "skipme" && p["kernel"] == K1).unwrap();
    assert_eq!(skipped["ok"], true);
    let kernel = |k: &str| json["kernels"].as_array().unwrap().iter().find(|x| x["kernel"] == k).unwrap().clone();
    assert_eq!(kernel(K2)["headers"], serde_json::Value::Null);
    assert_eq!(kernel(K2)["headers_package"], "linux-lts-headers");
    assert_eq!((kernel(RT)["excluded"].as_bool(), kernel(K1)["excluded"].as_bool()), (Some(true), Some(false)));
}

#[test]
fn what_is_out_of_place_until_sync_and_a_hand_clean_up() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    t.module_pkg("gone-dkms", "gone-2.0", &dkms_conf("gone", "2.0"));
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2).dkms_installed("gone", "2.0", K1);
    // Removed behind dkms-hook's back: a kernel (its builds stay) and a module package (its
    // registration stays), and a module file nobody knows.
    t.remove_package("linux-lts-headers").remove_package("linux-lts");
    t.remove_package("gone-dkms");
    let stray = t.path(&format!("usr/lib/modules/{K1}/updates/dkms/stray.ko"));
    fs::write(&stray, "not from dkms").unwrap();

    let run = t.run(&["status"], "");
    run.assert_code(1);
    run.expect_line(&["==> Out of place"]);
    run.expect_line(&[&format!(
        "  -> hello/1.0 is built for {K2}, which is not an installed kernel: `dkms-hook sync` removes it"
    )]);
    run.expect_line(&[
        "  -> gone/2.0 is registered with dkms (built for",
        K1,
        "but its source",
        "usr/src/gone-2.0 is gone",
    ]);
    run.expect_line(&[&format!("  -> {} is not known to dkms: dkms-hook does not touch it", stray.display())]);
    run.expect_line(&["==> 3 items need attention"]);

    let (_, json, _) = status_json(&t);
    let kinds: Vec<&str> =
        json["out_of_place"].as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["orphan_registration", "stale_build", "unknown_module_file"]);
    assert_eq!(json["out_of_place"][0]["module"], "gone");
    assert_eq!(json["out_of_place"][0]["kernels"], serde_json::json!([K1]));
    assert_eq!(json["out_of_place"][1]["kernels"], serde_json::json!([K2]));
    assert_eq!(json["out_of_place"][2]["path"], stray.display().to_string());

    t.run(&["-j", "1", "sync"], "").assert_code(0);
    let run = t.run(&["status"], "");
    run.assert_code(1);
    run.expect_line(&["==> 1 item needs attention"]);
    assert!(run.line(&["gone/2.0"]).is_none() && run.line(&["is built for"]).is_none(), "{run}");

    fs::remove_file(&stray).unwrap();
    t.run(&["status"], "").assert_code(0);
}

#[test]
fn unpackaged_sources_are_listed_and_left_alone() {
    let t = TestRoot::with_two_kernels();
    fs::create_dir_all(t.path("usr/src/mine-0.1")).unwrap();
    fs::write(t.path("usr/src/mine-0.1/dkms.conf"), dkms_conf("mine", "0.1")).unwrap();
    let run = t.run(&["status"], "");
    run.assert_code(0);
    run.expect_line(&["  -> mine/0.1 not owned by any package: dkms-hook leaves it alone"]);
    let (_, json, _) = status_json(&t);
    assert!(json["sources"][0]["package"].is_null());
    assert_eq!(json["modules"], serde_json::json!([]));
}

#[test]
fn an_unreadable_dkms_conf_is_a_problem() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("bad-dkms", "bad-1", "PACKAGE_NAME=\"\"\n");
    let run = t.run(&["status"], "");
    run.assert_code(1);
    run.expect_line(&["     error: ", "PACKAGE_NAME is empty"]);
    let (_, json, _) = status_json(&t);
    assert!(json["sources"][0]["error"].as_str().unwrap().contains("PACKAGE_NAME is empty"));
}

#[test]
fn status_and_dry_runs_do_not_wait_for_the_lock() {
    let t = TestRoot::with_two_kernels();
    hello(&t);
    let _held = t.hold_lock();
    let started = Instant::now();
    t.run(&["status"], "").assert_code(1);
    t.run(&["sync", "--dry-run"], "").assert_code(0);
    t.run(&["--dry-run", "install"], "usr/src/hello-1.0/dkms.conf\n").assert_code(0);
    assert!(started.elapsed() < Duration::from_secs(20), "status or a dry run waited for the lock");
}
