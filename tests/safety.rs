//! Safety rules, one test each:
//! 1. files are only removed through dkms or, for dkms-hook's own clean-up, as empty
//!    directories inside `usr/lib/modules/K/updates/dkms` (and `updates/`) and in dkms-hook's own
//!    state and logs — foreign files next to dkms's survive every operation;
//! 2. no shell strings: names that a shell would interpret never reach a command;
//! 3. dkms.conf is evaluated with a clean environment, a time limit, in its own process group,
//!    and as `nobody` where the file allows it;
//! 4. names and versions from dkms.conf, the dkms tree and the module directories are validated
//!    before they become paths or arguments;
//! 5. what the guard mounts for a build (incoming headers at `/lib/modules/K/build`) is seen by
//!    that build alone and is gone when it ends.

mod common;
#[path = "faults/support.rs"]
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use support::*;

/// A user's own module, a vendor module, a .ko in updates/dkms that dkms does not know, a module
/// added to dkms by hand (its source not from a package), dkms's signing key, a source tree no
/// package owns. Paths relative to the root, with their content ("" for a directory).
const FOREIGN: &[(&str, &str)] = &[
    ("usr/lib/modules/6.1.0-47-amd64/updates/user.ko", "a user's own module\n"),
    ("usr/lib/modules/6.1.0-47-amd64/updates/dkms/unknown.ko", "dkms does not know this one\n"),
    ("usr/lib/modules/6.6.30-1-lts/updates/dkms/unknown.ko", "nor this one\n"),
    ("usr/lib/modules/6.6.30-1-lts/extra/vendor.ko", "a vendor module\n"),
    ("usr/lib/modules/6.6.30-1-lts/updates/notes.txt", "notes\n"),
    ("var/lib/dkms/mok.key", "not a real key\n"),
    ("var/lib/dkms/mok.pub", "not a real certificate\n"),
    ("var/lib/dkms/README", "the admin's notes\n"),
];

/// Two kernels, `hello` packaged and installed for both, `other` added to dkms by hand and
/// installed for both, and every [`FOREIGN`] file.
fn crowded() -> TestRoot {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.dkms_installed("hello", "1.0", K1).dkms_installed("hello", "1.0", K2);
    fs::create_dir_all(t.path("usr/src/other-1.0")).unwrap();
    fs::write(t.path("usr/src/other-1.0/dkms.conf"), dkms_conf("other", "1.0")).unwrap();
    t.dkms_installed("other", "1.0", K1).dkms_installed("other", "1.0", K2);
    for (path, content) in FOREIGN {
        fs::create_dir_all(t.path(path).parent().unwrap()).unwrap();
        fs::write(t.path(path), content).unwrap();
    }
    t
}

#[track_caller]
fn assert_foreign_intact(t: &TestRoot, run: &Run) {
    assert_foreign_intact_for(t, run, &[K1, K2]);
}

/// [`assert_foreign_intact`] when `other` should still be installed only for `kernels`.
#[track_caller]
fn assert_foreign_intact_for(t: &TestRoot, run: &Run, kernels: &[&str]) {
    for (path, content) in FOREIGN {
        let found = fs::read_to_string(t.path(path));
        assert_eq!(found.as_deref().ok(), Some(*content), "{path} was touched\n{run}");
    }
    for &k in kernels {
        assert!(t.ko_installed("other", k), "the hand-added module other lost its {k} install\n{run}");
        assert_eq!(t.installed_for("other", k).as_deref(), Some("1.0"), "{run}");
    }
    assert!(t.path("usr/src/other-1.0/dkms.conf").is_file(), "{run}");
}

#[test]
fn foreign_files_survive_every_operation() {
    let t = crowded();
    let steps: Vec<(&str, Vec<&str>, String)> = vec![
        ("new headers", vec!["install"], format!("usr/lib/modules/{K2}/build/include/\n")),
        ("headers leave", vec!["remove"], format!("usr/lib/modules/{K2}/build/include/\n")),
        ("rebuild removal", vec!["remove", "--no-depmod"], "usr/src/hello-1.0/dkms.conf\n".to_owned()),
        ("rebuild", vec!["install"], "usr/src/hello-1.0/dkms.conf\n".to_owned()),
        ("module removal", vec!["remove"], "usr/src/hello-1.0/dkms.conf\n".to_owned()),
        (
            "kernel removal",
            vec!["remove"],
            format!("usr/lib/modules/{K2}/modules.order\nusr/lib/modules/{K2}/vmlinuz\n"),
        ),
    ];
    for (what, args, stdin) in &steps {
        let run = t.run(args, stdin);
        assert!(run.code == Some(0), "{what}\n{run}");
        // A leaving kernel loses all its DKMS modules, the hand-added one too (through dkms).
        let kernels: &[&str] = if *what == "kernel removal" { &[K1] } else { &[K1, K2] };
        assert_foreign_intact_for(&t, &run, kernels);
    }
    // The module's own files did go.
    assert!(!t.ko_installed("hello", K1) && !t.is_registered("hello", "1.0"));
}

#[test]
fn foreign_files_survive_sync_and_status() {
    // `sync` repairs hello's missing install but leaves everything else alone.
    let t = crowded();
    fs::remove_file(t.path(&format!("usr/lib/modules/{K2}/updates/dkms/hello.ko"))).unwrap();
    for args in [&["status"][..], &["sync"][..], &["sync", "--dry-run"][..], &["status", "--json"][..]] {
        let run = t.run(args, "");
        assert!(run.code.is_some_and(|c| c <= 1), "{run}");
        assert_foreign_intact(&t, &run);
    }
}

#[test]
fn dkms_hook_itself_removes_only_empty_directories_below_updates() {
    // With a dkms that does nothing, anything that disappears was removed by dkms-hook.
    let t = crowded();
    // Empty directories dkms-hook may tidy, and ones it may not.
    for dir in ["updates/dkms/empty-sub", "kernel/empty", "misc"] {
        fs::create_dir_all(t.path(&format!("usr/lib/modules/{K1}/{dir}"))).unwrap();
    }
    let noop = script(&t, "noop-dkms", "#!/bin/sh\nexit 0\n");
    for (args, stdin) in [
        (
            &["remove"][..],
            format!("usr/src/hello-1.0/dkms.conf\nusr/src/other-1.0/dkms.conf\nusr/lib/modules/{K1}/modules.order\n"),
        ),
        (&["remove", "--no-depmod"][..], "usr/src/hello-1.0/dkms.conf\n".to_owned()),
        (&["install"][..], format!("usr/src/hello-1.0/dkms.conf\nusr/lib/modules/{K1}/modules.order\n")),
        (&["sync"][..], String::new()),
    ] {
        let before = t.snapshot();
        let run = run_tools(&t, &noop, &t.fake_depmod(), args, stdin.as_bytes(), &[]);
        let removed: Vec<String> = snapshot_diff(&before, &t.snapshot())
            .into_iter()
            .filter(|d| d.starts_with("removed ") || d.starts_with("changed "))
            .filter(|d| {
                let p = d.split_once(' ').unwrap().1;
                // dkms-hook's own files, empty directories below updates/, and dkms's `source`
                // link of a module version re-pointed (at kept sources, and back), never removed.
                let own = OWN_FILES.iter().any(|o| p.starts_with(o.trim_end_matches('/')));
                let tidy = p.starts_with("usr/lib/modules/")
                    && (p.ends_with("/updates/dkms") || p.ends_with("/updates") || p.contains("/updates/dkms/"))
                    && before.get(Path::new(p)) == Some(&Entry::Dir);
                let relinked = d.starts_with("changed ")
                    && p.starts_with("var/lib/dkms/")
                    && p.ends_with("/source")
                    && matches!(before.get(Path::new(p)), Some(Entry::Link(_)));
                !own && !tidy && !relinked
            })
            .collect();
        assert!(removed.is_empty(), "dkms-hook removed or changed by itself:\n  {}\n{run}", removed.join("\n  "));
        assert_foreign_intact(&t, &run);
        for dir in ["kernel/empty", "misc"] {
            assert!(t.path(&format!("usr/lib/modules/{K1}/{dir}")).is_dir(), "{dir} was removed\n{run}");
        }
    }
}

#[test]
fn shell_strings_in_names_are_never_executed() {
    let t = TestRoot::with_two_kernels();
    let pwned = t.scratch().join("pwned");
    let p = pwned.display();
    // Names a shell would run, in dkms.conf, in a directory name, in a kernel directory and in
    // the dkms tree.
    t.module_pkg(
        "evil-dkms",
        "evil-1.0",
        &format!("PACKAGE_NAME='evil;touch {p}-1'\nPACKAGE_VERSION='1.0$(touch {p}-2)'\n"),
    );
    t.module_pkg("evil2-dkms", "evil2-1.0", &format!("PACKAGE_NAME='evil2`touch {p}-3`'\nPACKAGE_VERSION=1.0\n"));
    let dir = format!("x$(touch {p}-4)-1.0");
    fs::create_dir_all(t.path("usr/src").join(&dir)).unwrap();
    fs::write(t.path("usr/src").join(&dir).join("dkms.conf"), dkms_conf("x", "1.0")).unwrap();
    let kdir = "6.1$(touch pwned-5)";
    t.kernel("linux-evil", kdir).headers("linux-evil-headers", kdir);
    let mdir = t.path("var/lib/dkms/$(touch pwned-6)/1.0");
    fs::create_dir_all(mdir.join(format!("{K1}/{ARCH}/module"))).unwrap();
    std::os::unix::fs::symlink(
        "1.0/6.1.0-47-amd64/x86_64",
        t.path("var/lib/dkms/$(touch pwned-6)/kernel-6.1.0-47-amd64-x86_64"),
    )
    .unwrap();

    let stdin = format!(
        "usr/src/evil-1.0/dkms.conf\nusr/src/evil2-1.0/dkms.conf\nusr/src/{dir}/dkms.conf\nusr/lib/modules/{kdir}/modules.order\n"
    );
    for args in [&["install"][..], &["remove"][..], &["sync"][..]] {
        let run = t.run(args, &stdin);
        for call in &run.calls {
            for arg in &call.args {
                assert!(
                    !arg.contains('$') && !arg.contains('`') && !arg.contains(';'),
                    "a shell string reached {call}\n{run}"
                );
            }
        }
        let k1 = t.run(&["remove"], format!("usr/lib/modules/{K1}/modules.order\n"));
        assert!(k1.calls.iter().all(|c| !c.args.iter().any(|a| a.contains("pwned"))), "{k1}");
        let left: Vec<_> = fs::read_dir(t.scratch())
            .unwrap()
            .chain(fs::read_dir(t.root()).unwrap())
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pwned"))
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "a name was executed: {left:?}\n{run}");
    }
}

#[test]
fn names_from_dkms_conf_are_validated_before_use() {
    let t = TestRoot::with_two_kernels();
    for (dir, name, version) in [
        ("a-1.0", "../../etc", "1.0"),
        ("b-1.0", "-rf", "1.0"),
        ("c-1.0", "'c c'", "1.0"),
        ("d-1.0", "d", "../1.0"),
        ("e-1.0", "e", "--all"),
        ("f-1.0", "'f\nx'", "1.0"),
    ] {
        t.module_pkg(&format!("{}-dkms", &dir[..1]), dir, &format!("PACKAGE_NAME={name}\nPACKAGE_VERSION={version}\n"));
    }
    let stdin = "usr/src/a-1.0/dkms.conf\nusr/src/b-1.0/dkms.conf\nusr/src/c-1.0/dkms.conf\n\
                 usr/src/d-1.0/dkms.conf\nusr/src/e-1.0/dkms.conf\nusr/src/f-1.0/dkms.conf\n";
    let before = t.snapshot();
    let run = t.run(&["install"], stdin);
    run.assert_code(1);
    assert!(run.calls.is_empty(), "an invalid name reached dkms\n{run}");
    for dir in ["a-1.0", "b-1.0", "c-1.0", "d-1.0", "e-1.0", "f-1.0"] {
        let line = one_line(&run.output(), &[&format!("{dir}/dkms.conf"), "not a valid name"], &run);
        assert_error_line(&line, &["fix"]);
    }
    assert_same(&before, &t.snapshot(), &run);
}

#[test]
fn names_from_the_dkms_tree_are_validated_before_use() {
    // A kernel leaves: only the valid entries of the tree are removed through dkms.
    let t = TestRoot::with_two_kernels();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.dkms_installed("hello", "1.0", K1);
    for (m, v) in [("-rf", "1.0"), ("bad name", "1.0"), ("ok", "-v"), ("ok2", "1 0"), ("ok3", "$(reboot)")] {
        let dir = t.path("var/lib/dkms").join(m).join(v);
        fs::create_dir_all(dir.join(format!("{K1}/{ARCH}/module"))).unwrap();
    }
    let run = t.run(&["remove"], format!("usr/lib/modules/{K1}/modules.order\n"));
    run.assert_code(0);
    assert_eq!(run.removes(), vec![job("hello", "1.0", K1)], "{run}");
}

#[test]
fn dkms_conf_runs_in_a_clean_environment() {
    if !skip::can_run("reading dkms.conf as nobody", skip::root_missing()) {
        return;
    }
    let t = TestRoot::with_two_kernels();
    let out = writable_by_anyone(&t, "env.out");
    t.module_pkg("foo-dkms", "foo-1.0", &format!("env > {}\nPACKAGE_NAME=foo\nPACKAGE_VERSION=1.0\n", out.display()));
    for readable_by_nobody in [false, true] {
        if readable_by_nobody {
            open_to_others(&t);
        }
        let run = t.run_env(
            &["--dry-run", "install"],
            "usr/src/foo-1.0/dkms.conf\n",
            &[
                ("DKMS_HOOK_TEST_MARKER", "secret"),
                ("HOME", "/root"),
                ("LD_PRELOAD", ""),
                ("SSH_AUTH_SOCK", "/tmp/agent"),
            ],
        );
        run.assert_code(0);
        let env = fs::read_to_string(&out).unwrap();
        let keys: Vec<&str> = env.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        assert!(!keys.is_empty(), "dkms.conf did not run\n{run}");
        for key in &keys {
            assert!(
                ["PATH", "LC_ALL", "PWD", "OLDPWD", "SHLVL", "_"].contains(key),
                "unexpected variable {key} in dkms.conf's environment:\n{env}"
            );
        }
    }
}

/// An empty file in the scratch directory that a dkms.conf run as any user can append to.
fn writable_by_anyone(t: &TestRoot, name: &str) -> std::path::PathBuf {
    let path = t.scratch().join(name);
    fs::write(&path, "").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    path
}

#[test]
fn dkms_conf_is_read_as_nobody_where_possible() {
    if !skip::can_run("reading dkms.conf as nobody", skip::root_missing()) {
        return;
    }
    let t = TestRoot::with_two_kernels();
    let out = writable_by_anyone(&t, "id.out");
    let victim = t.path(&format!("usr/lib/modules/{K1}/written-by-dkms-conf"));
    t.module_pkg(
        "foo-dkms",
        "foo-1.0",
        &format!(
            "id -u >> {}\ntouch {} 2>/dev/null\nPACKAGE_NAME=foo\nPACKAGE_VERSION=1.0\n",
            out.display(),
            victim.display()
        ),
    );
    open_to_others(&t);
    let run = t.run(&["--dry-run", "install"], "usr/src/foo-1.0/dkms.conf\n");
    run.assert_code(0);
    assert_eq!(fs::read_to_string(&out).unwrap().trim(), "65534", "dkms.conf was not read as nobody\n{run}");
    assert!(!victim.exists(), "dkms.conf could write into the root\n{run}");

    // Not readable by nobody: read as root, and the debug log says why.
    fs::write(&out, "").unwrap();
    fs::set_permissions(t.path("usr/src/foo-1.0/dkms.conf"), fs::Permissions::from_mode(0o600)).unwrap();
    let run = t.run_env(&["--dry-run", "install"], "usr/src/foo-1.0/dkms.conf\n", &[("RUST_LOG", "dkms_hook=debug")]);
    run.assert_code(0);
    assert_eq!(fs::read_to_string(&out).unwrap().trim(), "0", "{run}");
    run.expect_line(&["nobody cannot read", "foo-1.0/dkms.conf", "as root"]);
    run.expect_line(&["install foo/1.0 for", K1]);
}

/// Whatever a dkms.conf prints, even what a permission problem looks like, it is evaluated as
/// `nobody` when `nobody` can read it, never again as root.
#[test]
fn nothing_dkms_conf_prints_makes_it_run_as_root() {
    if !skip::can_run("reading dkms.conf as nobody", skip::root_missing()) {
        return;
    }
    let t = TestRoot::with_two_kernels();
    let out = writable_by_anyone(&t, "id.out");
    let victim = t.path(&format!("usr/lib/modules/{K1}/written-by-dkms-conf"));
    let conf = format!(
        "id -u >> {out}\ntouch {victim} 2>/dev/null\n\
         echo 'bash: /etc/shadow: Permission denied' >&2\necho 'Permission denied'\n\
         PACKAGE_NAME=foo\nPACKAGE_VERSION=1.0\n",
        out = out.display(),
        victim = victim.display()
    );
    t.module_pkg("foo-dkms", "foo-1.0", &conf);
    t.module_pkg("bar-dkms", "bar-1.0", &conf.replace("foo", "bar"));
    open_to_others(&t);
    // Alone (one file) and in a batch (several files read by one bash).
    for stdin in ["usr/src/foo-1.0/dkms.conf\n", "usr/src/foo-1.0/dkms.conf\nusr/src/bar-1.0/dkms.conf\n"] {
        fs::write(&out, "").unwrap();
        let run = t.run(&["--dry-run", "install"], stdin);
        let ids: Vec<String> = fs::read_to_string(&out).unwrap().lines().map(str::to_owned).collect();
        assert!(!ids.is_empty() && ids.iter().all(|id| id == "65534"), "dkms.conf ran as {ids:?}\n{run}");
        assert!(!victim.exists(), "dkms.conf could write into the root\n{run}");
    }
    // status too, which never evaluates package code as root at all.
    fs::write(&out, "").unwrap();
    let run = t.run(&["status"], "");
    let ids: Vec<String> = fs::read_to_string(&out).unwrap().lines().map(str::to_owned).collect();
    assert!(!ids.is_empty() && ids.iter().all(|id| id == "65534"), "status evaluated dkms.conf as {ids:?}\n{run}");
}

/// `status` never evaluates package code as root: a dkms.conf `nobody` cannot read is reported,
/// not read as root (the hooks, which run dkms on it as root anyway, still read it).
#[test]
fn status_never_evaluates_dkms_conf_as_root() {
    if !skip::can_run("reading dkms.conf as nobody", skip::root_missing()) {
        return;
    }
    let t = TestRoot::with_two_kernels();
    let out = writable_by_anyone(&t, "id.out");
    t.module_pkg(
        "foo-dkms",
        "foo-1.0",
        &format!("id -u >> {}\nPACKAGE_NAME=foo\nPACKAGE_VERSION=1.0\n", out.display()),
    );
    open_to_others(&t);
    fs::set_permissions(t.path("usr/src/foo-1.0/dkms.conf"), fs::Permissions::from_mode(0o600)).unwrap();
    let run = t.run(&["status"], "");
    run.assert_code(1);
    assert_eq!(fs::read_to_string(&out).unwrap(), "", "status evaluated dkms.conf\n{run}");
    let line = run.expect_line(&["error:", "foo-1.0/dkms.conf", "nobody cannot read it"]);
    assert!(line.contains("world-readable"), "{line}");
}

#[test]
fn dkms_conf_time_limit() {
    let t = TestRoot::with_two_kernels();
    t.module_pkg("foo-dkms", "foo-1.0", "PACKAGE_NAME=foo\nPACKAGE_VERSION=1.0\nwhile :; do sleep 0.01; done\n");
    let started = Instant::now();
    let run = t.run(&["install"], "usr/src/foo-1.0/dkms.conf\n");
    let took = started.elapsed();
    run.assert_code(1);
    assert!(took < Duration::from_secs(15), "took {took:?}\n{run}");
    let line = one_line(&run.output(), &["foo-1.0/dkms.conf", "longer than 10 s"], &run);
    assert_error_line(&line, &["fix the file"]);
    assert!(run.calls.is_empty(), "{run}");
}

#[test]
fn dkms_conf_leaves_no_process_behind() {
    // A background process in dkms.conf is killed with its process group; one that escapes the
    // group and keeps the output open is reported and does not hang the run.
    let t = TestRoot::with_two_kernels();
    let marker = format!("{}", 3000 + std::process::id() % 1000);
    t.module_pkg("bg-dkms", "bg-1.0", &format!("sleep {marker}.25 &\nPACKAGE_NAME=bg\nPACKAGE_VERSION=1.0\n"));
    t.module_pkg(
        "esc-dkms",
        "esc-1.0",
        &format!("setsid sleep {marker}.75 &\nsleep 0.3\nPACKAGE_NAME=esc\nPACKAGE_VERSION=1.0\n"),
    );
    let started = Instant::now();
    let run = t.run(&["--dry-run", "install"], "usr/src/bg-1.0/dkms.conf\nusr/src/esc-1.0/dkms.conf\n");
    let took = started.elapsed();
    let escaped = processes_mentioning(&format!("{marker}.75"));
    for &pid in &escaped {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(took < Duration::from_secs(8), "took {took:?}\n{run}");
    assert!(
        processes_mentioning(&format!("{marker}.25")).is_empty(),
        "dkms.conf's background process is still running\n{run}"
    );
    run.expect_line(&["install bg/1.0 for", K1]);
    let line = one_line(&run.output(), &["esc-1.0/dkms.conf"], &run);
    assert_error_line(&line, &["left its process group", "fix the file"]);
}

#[test]
fn a_private_mount_is_seen_by_the_program_alone() {
    use dkms_hook::interrupt::Stop;
    use dkms_hook::process::{self, Options, PrivateMount};
    if !common::skip::can_run("private mounts", common::skip::root_missing()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (headers, modules) = (dir.path().join("headers"), dir.path().join("modules"));
    fs::create_dir_all(&headers).unwrap();
    fs::create_dir_all(modules.join("6.1-old/build")).unwrap();
    fs::write(headers.join("Makefile"), "incoming headers\n").unwrap();
    let target = modules.join("6.2-new/build");
    let dep = modules.join("6.2-new/modules.dep");
    let mount = PrivateMount::new(&headers, &modules, &target)
        .and_then(|m| m.with_file(&dep, b"kernel/fs/ext4.ko.zst:\n"))
        .unwrap();
    let stop = Stop::new();
    let opts = Options { mount: Some(&mount), ..Options::new(&stop) };
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(format!("cat {}/Makefile {}; ls {}", target.display(), dep.display(), modules.display()));
    let done = process::run(cmd, &opts).unwrap();
    // The program sees the headers at the target, the file beside them, and nothing else of the
    // covered directory.
    assert_eq!((done.code(), done.text().as_str()), (Some(0), "incoming headers\nkernel/fs/ext4.ko.zst:\n6.2-new\n"));
    // Outside: nothing made, nothing mounted, the covered directory as it was.
    let names: Vec<String> =
        fs::read_dir(&modules).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["6.1-old"]);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(dir.path().to_str().unwrap()), "{mounts}");
    assert!(PrivateMount::new(&headers, &modules, &dir.path().join("elsewhere")).is_err());
}
