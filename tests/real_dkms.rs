//! The real tier under `--root`: the real dkms (relocated trees) builds a real module against
//! the real headers of two Debian kernels, and the real depmod indexes it. The fixture root's
//! pacman database is written by the shared test environment; the headers are copies of
//! `/usr/src/linux-headers-K` (installed by scripts/setup).
//!
//! Without root, dkms or the headers this tier cannot run: it follows the common skip rule
//! (fails under CI, reports itself skipped elsewhere).

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use common::{TestRoot, K1};

const K2_REAL: &str = common::K_CLOUD;

const HELLO_C: &str = r#"#include <linux/module.h>
static int __init hello_init(void) { return 0; }
static void __exit hello_exit(void) {}
module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
"#;

fn require() -> bool {
    common::skip::can_run("the real dkms tier", common::skip::real_dkms_missing(&[K1, K2_REAL]))
}

fn hello_package(t: &TestRoot, version: &str) {
    let conf = format!(
        "PACKAGE_NAME=\"hello-real\"\nPACKAGE_VERSION=\"{version}\"\nBUILT_MODULE_NAME[0]=\"hello_real\"\n\
         DEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=\"yes\"\n\
         MAKE[0]=\"make -C ${{kernel_source_dir}} M=${{dkms_tree}}/${{PACKAGE_NAME}}/${{PACKAGE_VERSION}}/build modules\"\n\
         CLEAN=\"true\"\n"
    );
    let dir = format!("usr/src/hello-real-{version}");
    t.package(
        "hello-real-dkms",
        &format!("{version}-1"),
        &[
            (&format!("{dir}/"), ""),
            (&format!("{dir}/dkms.conf"), &conf),
            (&format!("{dir}/Kbuild"), "obj-m := hello_real.o\n"),
            (&format!("{dir}/hello_real.c"), HELLO_C),
        ],
    );
}

fn modinfo(path: &Path, field: &str) -> String {
    let out = Command::new("modinfo").args(["-F", field]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn real_dkms_builds_installs_and_removes_a_module_for_two_real_kernels_under_root() {
    if !require() {
        return;
    }
    let t = TestRoot::new();
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.kernel("linux-cloud", K2_REAL).headers("linux-cloud-headers", K2_REAL);
    t.real_headers(K1).real_headers(K2_REAL);
    // An Arch root has /lib -> usr/lib; depmod -b looks for ROOT/lib/modules.
    symlink("usr/lib", t.path("lib")).unwrap();
    hello_package(&t, "1.0");

    let run = t.run_raw(
        &["--root", t.root().to_str().unwrap(), "--dkms", "dkms", "--depmod", "depmod", "install"],
        "usr/src/hello-real-1.0/dkms.conf\n",
        &[],
    );
    run.assert_code(0);
    for k in [K1, K2_REAL] {
        run.expect_line(&[&format!("hello-real/1.0 for {k}"), "installed"]);
        let ko = t.path(&format!("usr/lib/modules/{k}/updates/dkms/hello_real.ko"));
        assert!(ko.is_file(), "{} missing\n{run}", ko.display());
        let vermagic = modinfo(&ko, "vermagic");
        assert_eq!(vermagic.split_whitespace().next(), Some(k), "{vermagic}");
        let dep = fs::read_to_string(t.path(&format!("usr/lib/modules/{k}/modules.dep"))).unwrap();
        assert!(dep.contains("updates/dkms/hello_real.ko"), "{dep}");
        assert_eq!(t.installed_for("hello-real", k).as_deref(), Some("1.0"));
    }
    // Signing stayed inside the root; nothing was written to the host's dkms tree.
    assert!(t.path("var/lib/dkms/mok.key").exists());
    assert!(!Path::new("/var/lib/dkms/hello-real").exists());

    // A no-op: everything is installed, no dkms call is needed.
    let again = t.run_raw(
        &["--root", t.root().to_str().unwrap(), "--dkms", "dkms", "--depmod", "depmod", "install"],
        format!("usr/lib/modules/{K1}/build/include/\n"),
        &[],
    );
    again.assert_code(0);
    assert!(!again.stdout.contains("installed in"), "{again}");

    // Removing the module package leaves nothing of it behind.
    let run = t.run_raw(
        &["--root", t.root().to_str().unwrap(), "--dkms", "dkms", "--depmod", "depmod", "remove"],
        "usr/src/hello-real-1.0/dkms.conf\n",
        &[],
    );
    run.assert_code(0);
    assert!(!t.path("var/lib/dkms/hello-real").exists(), "{run}");
    for k in [K1, K2_REAL] {
        assert!(!t.path(&format!("usr/lib/modules/{k}/updates")).exists(), "{run}");
        let dep = fs::read_to_string(t.path(&format!("usr/lib/modules/{k}/modules.dep"))).unwrap();
        assert!(!dep.contains("hello_real"), "{dep}");
    }
}
