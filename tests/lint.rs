//! `dkms-hook lint` on package files assembled by hand: a clean package and the example package
//! have no findings; every finding is made by a package with exactly that one defect, and comes
//! with its level and the exit status; a package with several defects reports each; paths that
//! are not packages are usage errors (exit 2). Nothing is left in the temporary directory, and a
//! dkms.conf is evaluated as nobody when lint runs as root.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::packages::{clean_dkms_conf, dkms_package, example_package, PackageSpec};
use common::{Run, TestRoot};

/// A test's directories: where packages go, and the `TMPDIR` lint runs with (readable by
/// nobody, as lint's own temporary directories are).
struct Setup {
    t: TestRoot,
}

impl Setup {
    fn new() -> Setup {
        let t = TestRoot::new();
        fs::set_permissions(t.scratch(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(t.scratch().join("tmp")).unwrap();
        fs::set_permissions(t.scratch().join("tmp"), fs::Permissions::from_mode(0o755)).unwrap();
        Setup { t }
    }

    fn out(&self) -> PathBuf {
        self.t.scratch().join("packages")
    }

    fn tmp(&self) -> PathBuf {
        self.t.scratch().join("tmp")
    }

    /// `dkms-hook lint ARGS…` with TMPDIR set; checks that lint left nothing in it.
    fn lint(&self, args: &[&str]) -> Run {
        let mut argv = vec!["lint"];
        argv.extend(args);
        let tmp = self.tmp();
        let run = self.t.run_raw(&argv, "", &[("TMPDIR", tmp.to_str().unwrap())]);
        let left: Vec<_> = fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "lint left {left:?} in its temporary directory\n{run}");
        run
    }

    /// `lint --json` on one package: the exit code and the (level, tag) of each finding.
    fn findings(&self, package: &Path) -> (Option<i32>, Vec<(String, String)>, serde_json::Value) {
        let run = self.lint(&["--json", package.to_str().unwrap()]);
        let json: serde_json::Value =
            serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{run}"));
        let found = json["packages"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["level"].as_str().unwrap().to_owned(), f["tag"].as_str().unwrap().to_owned()))
            .collect();
        (run.code, found, json)
    }
}

#[test]
fn a_clean_package_has_no_findings() {
    let s = Setup::new();
    let file = dkms_package("hello", "1.0").write(&s.out());
    let run = s.lint(&[file.to_str().unwrap()]);
    run.assert_code(0);
    run.expect_line(&["==> Linting hello-dkms 1.0-1 (", "hello-dkms-1.0-1-x86_64.pkg.tar.zst)"]);
    run.expect_line(&["==> hello-dkms 1.0-1: no errors or warnings"]);
    assert!(!run.output().lines().any(|l| l.starts_with("error") || l.starts_with("warning")), "{run}");
    let (code, found, json) = s.findings(&file);
    assert_eq!((code, found), (Some(0), vec![]));
    assert_eq!((json["schema"].as_u64(), json["ok"].as_bool()), (Some(1), Some(true)));
}

#[test]
fn the_example_package_is_clean_as_a_file_and_beside_its_pkgbuild() {
    let s = Setup::new();
    let file = example_package(&s.out());
    let (code, found, json) = s.findings(&file);
    assert_eq!((code, found), (Some(0), vec![]), "{json:#}");
    assert_eq!(json["packages"][0]["name"], "hello-dkms");

    // A copy of the example directory with the package built there.
    let dir = s.t.scratch().join("hello-dkms");
    fs::create_dir_all(&dir).unwrap();
    for entry in fs::read_dir(Path::new(common::packages::REPO).join("examples/hello-dkms")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    fs::copy(&file, dir.join(file.file_name().unwrap())).unwrap();
    let run = s.lint(&[dir.to_str().unwrap()]);
    run.assert_code(0);
    run.expect_line(&["==> hello-dkms 1.0-1: no errors or warnings"]);
}

/// A clean package with one thing changed by `defect`.
fn defective(defect: impl FnOnce(&mut PackageSpec)) -> PackageSpec {
    let mut spec = dkms_package("hello", "1.0");
    defect(&mut spec);
    spec
}

const CONF: &str = "usr/src/hello-1.0/dkms.conf";

/// What a test case changes in the clean package.
type Defect = Box<dyn FnOnce(&mut PackageSpec)>;

#[test]
fn each_defect_makes_its_finding_at_its_level() {
    let s = Setup::new();
    let replace = |from: &'static str, to: &'static str| {
        move |p: &mut PackageSpec| {
            let conf = p.file_mut(CONF);
            assert!(conf.contains(from), "{from} is not in the dkms.conf");
            *conf = conf.replace(from, to);
        }
    };
    let cases: Vec<(&str, &str, Defect)> = vec![
        (
            "error",
            "no-dkms-conf",
            Box::new(|p: &mut PackageSpec| p.files = vec![("usr/share/doc/hello/README".into(), "hello\n".into())]),
        ),
        (
            "error",
            "dkms-conf-misplaced",
            Box::new(|p: &mut PackageSpec| p.files[0].0 = "usr/src/hello-1.0/src/dkms.conf".into()),
        ),
        ("error", "dkms-conf-unreadable", Box::new(|p: &mut PackageSpec| p.file_mut(CONF).push_str("if then fi\n"))),
        ("error", "dkms-conf-wrong-directory", Box::new(replace("VERSION=\"1.0\"", "VERSION=\"1.1\""))),
        ("warning", "package-version-differs", Box::new(|p: &mut PackageSpec| p.version = "1.0.1-1".into())),
        (
            "error",
            "no-built-module-name",
            Box::new(|p: &mut PackageSpec| {
                *p.file_mut(CONF) =
                    "PACKAGE_NAME=hello\nPACKAGE_VERSION=1.0\nMAKE[0]=\"make KDIR=${kernel_source_dir}\"\n".into()
            }),
        ),
        ("warning", "implicit-built-module-name", Box::new(replace("BUILT_MODULE_NAME[0]=\"hello\"\n", ""))),
        ("error", "built-module-name-suffix", Box::new(replace("NAME[0]=\"hello\"", "NAME[0]=\"hello.ko\""))),
        ("error", "bad-dest-module-location", Box::new(replace("/updates/dkms", "/misc"))),
        (
            "warning",
            "deprecated-dkms-conf-option",
            Box::new(|p: &mut PackageSpec| p.file_mut(CONF).push_str("REMAKE_INITRD=\"yes\"\n")),
        ),
        ("error", "dkms-missing-dependency", Box::new(|p: &mut PackageSpec| p.depends.clear())),
        ("warning", "hard-headers-dependency", Box::new(|p: &mut PackageSpec| p.depends.push("linux-headers".into()))),
        (
            "error",
            "scriptlet-runs-module-tools",
            Box::new(|p: &mut PackageSpec| {
                p.install = Some("post_install() {\n  dkms install hello/1.0\n}\n".into());
            }),
        ),
        (
            "warning",
            "scriptlet-unneeded",
            Box::new(|p: &mut PackageSpec| {
                p.install = Some("post_install() {\n  echo 'hello is built by the hooks'\n}\n".into());
            }),
        ),
        ("warning", "builds-for-running-kernel", Box::new(replace("make KDIR=${kernel_source_dir} all", "make all"))),
    ];
    let mut covered = Vec::new();
    for (i, (level, tag, defect)) in cases.into_iter().enumerate() {
        let mut spec = defective(defect);
        spec.name = format!("case{i}-dkms");
        let file = spec.write(&s.out());
        let (code, found, json) = s.findings(&file);
        assert_eq!(found, [(level.to_owned(), tag.to_owned())], "{tag}: {json:#}");
        assert_eq!(code, Some(if level == "error" { 1 } else { 0 }), "{tag}: {json:#}");
        let finding = &json["packages"][0]["findings"][0];
        for field in ["message", "fix"] {
            let text = finding[field].as_str().unwrap();
            assert!(!text.is_empty() && !text.contains(s.tmp().to_str().unwrap()), "{tag} {field}: {text}");
        }
        covered.push(tag);
    }
    // Every finding lint can make without building has its package here.
    let static_tags: Vec<&str> =
        dkms_hook::lint::Tag::ALL.iter().map(|t| t.name()).filter(|t| !t.starts_with("build-")).collect();
    assert_eq!(covered, static_tags);
}

#[test]
fn a_package_with_several_defects_reports_each_in_text() {
    let s = Setup::new();
    let mut spec = dkms_package("hello", "1.0");
    spec.version = "1.0.1-1".into();
    spec.depends = vec!["linux-headers".into()];
    *spec.file_mut(CONF) = clean_dkms_conf("hello", "1.0").replace("make KDIR=${kernel_source_dir} all", "make all")
        + "REMAKE_INITRD=\"yes\"\nCLEAN=\"make clean\"\n";
    spec.install =
        Some("post_install() {\n  dkms install hello/1.0\n  modprobe hello\n}\npre_remove() {\n  dkms remove hello/1.0 --all\n}\n".into());
    let file = spec.write(&s.out());
    let run = s.lint(&[file.to_str().unwrap()]);
    run.assert_code(1);
    for (level, tag, words) in [
        ("warning", "package-version-differs", "PACKAGE_VERSION=1.0 but the package's pkgver is 1.0.1"),
        ("warning", "deprecated-dkms-conf-option", "sets REMAKE_INITRD"),
        ("warning", "deprecated-dkms-conf-option", "sets CLEAN"),
        ("warning", "builds-for-running-kernel", "usr/src/hello-1.0/Makefile line 2"),
        ("error", "dkms-missing-dependency", "add dkms to depends"),
        ("warning", "hard-headers-dependency", "drop linux-headers from depends"),
        ("error", "scriptlet-runs-module-tools", "runs dkms (lines 2, 6)"),
        ("error", "scriptlet-runs-module-tools", "runs modprobe (line 3)"),
    ] {
        run.expect_line(&[&format!("{level}: hello-dkms [{tag}]: "), words]);
    }
    run.expect_line(&["==> hello-dkms 1.0.1-1: 3 errors, 5 warnings"]);
}

#[test]
fn beside_a_pkgbuild_the_newest_dkms_package_is_linted() {
    let s = Setup::new();
    let dir = s.t.scratch().join("pkgbuild");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("PKGBUILD"), "pkgname=hello-dkms\n").unwrap();
    // An old build with a defect, the new one clean, and a -debug package without sources.
    defective(|p| p.version = "0.9-1".into()).write(&dir);
    dkms_package("hello", "1.0").write(&dir);
    PackageSpec {
        name: "hello-dkms-debug".into(),
        version: "1.0-1".into(),
        depends: vec![],
        files: vec![],
        install: None,
    }
    .write(&dir);
    let run = s.lint(&[dir.to_str().unwrap()]);
    run.assert_code(0);
    assert_eq!(run.count_lines("==> Linting "), 1, "{run}");
    run.expect_line(&["==> Linting hello-dkms 1.0-1"]);
}

#[test]
fn paths_that_are_not_packages_are_usage_errors() {
    let s = Setup::new();
    let not_a_package = s.t.scratch().join("notes.pkg.tar.zst");
    fs::write(&not_a_package, "not an archive").unwrap();
    let no_pkgbuild = s.t.scratch().join("empty");
    fs::create_dir_all(&no_pkgbuild).unwrap();
    let unbuilt = s.t.scratch().join("unbuilt");
    fs::create_dir_all(&unbuilt).unwrap();
    fs::write(unbuilt.join("PKGBUILD"), "pkgname=x\n").unwrap();
    let missing = s.t.scratch().join("missing.pkg.tar.zst");
    let good = dkms_package("hello", "1.0").write(&s.out());
    for (path, words) in [
        (&missing, "no such file or directory"),
        (&not_a_package, "not a package file"),
        (&no_pkgbuild, "no PKGBUILD in this directory"),
        (&unbuilt, "no built package (*.pkg.tar.*) beside the PKGBUILD: run makepkg there first"),
    ] {
        // A bad path fails the whole run before any package is linted.
        let run = s.lint(&[good.to_str().unwrap(), path.to_str().unwrap()]);
        run.assert_code(2);
        run.expect_line(&["error: ", path.to_str().unwrap(), words]);
        assert!(run.stdout.is_empty(), "{run}");
    }
    let run = s.lint(&[]);
    run.assert_code(2);
}

#[test]
fn dkms_conf_is_evaluated_as_nobody_when_root() {
    let s = Setup::new();
    let witness = s.t.scratch().join("witness");
    fs::create_dir_all(&witness).unwrap();
    fs::set_permissions(&witness, fs::Permissions::from_mode(0o777)).unwrap();
    let mut spec = dkms_package("hello", "1.0");
    spec.file_mut(CONF).push_str(&format!("id -u > {}/uid\n", witness.display()));
    let file = spec.write(&s.out());
    let (code, found, _) = s.findings(&file);
    assert_eq!((code, found), (Some(0), vec![]));
    let uid: u32 = fs::read_to_string(witness.join("uid")).unwrap().trim().parse().unwrap();
    let expected = if nix::unistd::geteuid().is_root() {
        nix::unistd::User::from_name("nobody").unwrap().unwrap().uid.as_raw()
    } else {
        nix::unistd::geteuid().as_raw()
    };
    assert_eq!(uid, expected);
}
