//! Signing follows the system, never dkms-hook's namespaces: with the fake dkms signing by dkms
//! 3.4's rule (no signing where its mounts differ from PID 1's unless `try_sign_modules=true`),
//! the guard's builds for an incoming kernel — made in a private mount namespace — come out
//! signed with the root's key exactly when a direct `dkms install` would sign them.

mod common;

use std::fs;

use common::*;

/// The fake dkms signing as dkms does on a kernel with module signing.
const SIGN: [(&str, &str); 1] = [("FAKE_DKMS_SIGN", "1")];

/// `linux` at K1 with headers and hello 1.0 installed (and signed) for it; `linux` 2.0-1 at
/// K_NEW is offered as `pacman -Syu` has it downloaded.
fn signed_system_with_a_kernel_upgrade(framework: Option<&str>) -> TestRoot {
    let t = TestRoot::new();
    offer_signed_kernel_upgrade(&t, framework, &[], &[]);
    t
}

/// Sets up `t` as [`signed_system_with_a_kernel_upgrade`] does, with `more` files in the offered
/// headers package and `kernel_more` in the kernel package.
fn offer_signed_kernel_upgrade(
    t: &TestRoot,
    framework: Option<&str>,
    more: &[(String, String)],
    kernel_more: &[(String, String)],
) {
    if let Some(text) = framework {
        fs::create_dir_all(t.path("etc/dkms")).unwrap();
        fs::write(t.path("etc/dkms/framework.conf"), text).unwrap();
    }
    t.kernel("linux", K1).headers("linux-headers", K1);
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &SIGN).assert_code(0);
    let kernel = format!("usr/lib/modules/{K_NEW}/vmlinuz");
    let mut kernel_files = vec![(kernel, "fake vmlinuz\n".to_owned())];
    kernel_files.extend(kernel_more.iter().cloned());
    t.offer("linux", "2.0-1", &borrowed(&kernel_files));
    let mut headers = headers_entries(K_NEW);
    headers.extend(more.iter().cloned());
    t.offer("linux-headers", "2.0-1", &borrowed(&headers));
}

/// The guard, pacman's kernel upgrade and the install hook.
fn guarded_kernel_upgrade(t: &TestRoot) -> Run {
    guarded_kernel_upgrade_env(t, &SIGN)
}

/// [`guarded_kernel_upgrade`] with the fake dkms's environment `env`.
fn guarded_kernel_upgrade_env(t: &TestRoot, env: &[(&str, &str)]) -> Run {
    let guard = t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), env);
    guard.assert_code(0);
    t.remove_package("linux").remove_package("linux-headers");
    t.kernel("linux", K_NEW).headers_version("linux-headers", "2.0-1", K_NEW);
    let post = t.run_env(&["install"], format!("usr/lib/modules/{K_NEW}/vmlinuz\n{}", headers_target(K_NEW)), env);
    post.assert_code(0);
    post
}

/// The signer line the fake dkms appended to an installed module, if any.
fn signer(t: &TestRoot, kver: &str) -> Option<String> {
    let path = t.path(&format!("usr/lib/modules/{kver}/updates/dkms/hello.ko"));
    let bytes = match path.exists() {
        true => fs::read(path).unwrap(),
        false => {
            let out =
                std::process::Command::new("zstd").arg("-dc").arg(path.with_extension("ko.zst")).output().unwrap();
            assert!(out.status.success(), "no hello.ko or hello.ko.zst for {kver}");
            out.stdout
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    text.ends_with("~Module signature appended~\n")
        .then(|| text.lines().find_map(|l| l.strip_prefix("fake signature by ")).unwrap_or_default().to_owned())
}

#[test]
fn a_guarded_kernel_upgrade_installs_modules_signed_with_the_roots_key() {
    let t = signed_system_with_a_kernel_upgrade(None);
    let certificate = fs::read_to_string(t.path("var/lib/dkms/mok.pub")).unwrap();
    let certificate = certificate.lines().next().unwrap();
    assert_eq!(signer(&t, K1).as_deref(), Some(certificate), "a direct install signs here");
    let post = guarded_kernel_upgrade(&t);
    post.expect_line(&[&format!("hello/1.0 for {K_NEW}"), "installed (built before the transaction)"]);
    assert_eq!(
        signer(&t, K_NEW).as_deref(),
        Some(certificate),
        "the guard's build is not signed as a direct install:\n{post}"
    );
}

#[test]
fn with_signing_disabled_by_policy_nothing_is_signed_and_nothing_complains() {
    let t = signed_system_with_a_kernel_upgrade(Some("try_sign_modules=\"false\"\n"));
    assert_eq!(signer(&t, K1), None);
    let post = guarded_kernel_upgrade(&t);
    post.expect_line(&[&format!("hello/1.0 for {K_NEW}"), "installed (built before the transaction)"]);
    assert_eq!(signer(&t, K_NEW), None, "{post}");
    assert!(!t.path("var/lib/dkms/mok.key").exists(), "a key was made although nothing is signed");
}

#[test]
fn a_module_framework_conf_keeps_unsigned_in_the_namespace_is_signed_with_the_kernels_sign_file() {
    // framework.conf's not_in_chroot wins over the environment: dkms leaves the guard's build
    // unsigned, and dkms-hook signs it as the direct install would have.
    let t = TestRoot::new();
    let sign_file = t.scratch().join("sign-file");
    fs::write(
        &sign_file,
        "#!/bin/sh\n# sign-file HASH KEY CERT MODULE\n[ \"$1\" = sha512 ] || exit 2\n\
         printf '\\nfake signature by %s\\n~Module signature appended~\\n' \"$(head -n 1 \"$3\")\" >>\"$4\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&sign_file, fs::Permissions::from_mode(0o755)).unwrap();
    let framework = format!("try_sign_modules=\"not_in_chroot\"\nsign_file={}\n", sign_file.display());
    let config = (format!("usr/lib/modules/{K_NEW}/build/.config"), "CONFIG_MODULE_SIG_HASH=\"sha512\"\n".to_owned());
    offer_signed_kernel_upgrade(&t, Some(&framework), &[config], &[]);
    let certificate = fs::read_to_string(t.path("var/lib/dkms/mok.pub")).unwrap();
    let post = guarded_kernel_upgrade(&t);
    post.expect_line(&[&format!("hello/1.0 for {K_NEW}"), "installed (built before the transaction)"]);
    assert_eq!(signer(&t, K_NEW).as_deref(), certificate.lines().next(), "{post}");
}

#[test]
fn a_guarded_build_for_a_kernel_with_compressed_modules_is_compressed_and_signed_as_a_direct_install() {
    // Arch's kernels ship *.ko.zst; dkms 3.4 compresses its modules to match what it finds in
    // the kernel's module directory, which in the guard's namespace is a fresh tmpfs.
    let t = TestRoot::new();
    let own = (format!("usr/lib/modules/{K_NEW}/kernel/fs/ext4.ko.zst"), "compressed in-tree module\n".to_owned());
    offer_signed_kernel_upgrade(&t, None, &[], &[own]);
    let certificate = fs::read_to_string(t.path("var/lib/dkms/mok.pub")).unwrap();
    let post = guarded_kernel_upgrade(&t);
    post.expect_line(&[&format!("hello/1.0 for {K_NEW}"), "installed (built before the transaction)"]);
    let dir = t.path(&format!("usr/lib/modules/{K_NEW}/updates/dkms"));
    assert!(dir.join("hello.ko.zst").is_file() && !dir.join("hello.ko").exists(), "{post}");
    assert_eq!(signer(&t, K_NEW).as_deref(), certificate.lines().next());
}

#[test]
fn a_guarded_build_for_a_kernel_with_compressed_modules_is_compressed_as_dkms_3_0_would() {
    // dkms 3.0 takes the compression from `.zst:` lines in the kernel's modules.dep, which
    // depmod writes after the kernel is installed; the guard's namespace shows one beforehand.
    let t = TestRoot::new();
    let own = (format!("usr/lib/modules/{K_NEW}/kernel/fs/ext4.ko.zst"), "compressed in-tree module\n".to_owned());
    offer_signed_kernel_upgrade(&t, None, &[], &[own]);
    let post = guarded_kernel_upgrade_env(&t, &[SIGN[0], ("FAKE_DKMS_SUFFIX_FROM", "modules.dep")]);
    post.expect_line(&[&format!("hello/1.0 for {K_NEW}"), "installed (built before the transaction)"]);
    let dir = t.path(&format!("usr/lib/modules/{K_NEW}/updates/dkms"));
    assert!(dir.join("hello.ko.zst").is_file() && !dir.join("hello.ko").exists(), "{post}");
}

#[test]
fn an_unsigned_build_from_before_the_transaction_is_built_again_when_the_system_signs() {
    let t = signed_system_with_a_kernel_upgrade(None);
    let certificate = fs::read_to_string(t.path("var/lib/dkms/mok.pub")).unwrap();
    // The guard builds while signing is off by policy; the admin turns it back on before the
    // install hook runs (the same happens to a build made where dkms would not sign).
    fs::create_dir_all(t.path("etc/dkms")).unwrap();
    fs::write(t.path("etc/dkms/framework.conf"), "try_sign_modules=false\n").unwrap();
    t.run_env(&["guard"], kernel_upgrade_targets(K1, K_NEW), &SIGN).assert_code(0);
    fs::remove_file(t.path("etc/dkms/framework.conf")).unwrap();
    t.remove_package("linux").remove_package("linux-headers");
    t.kernel("linux", K_NEW).headers_version("linux-headers", "2.0-1", K_NEW);
    fs::write(t.path(&format!("usr/lib/modules/{K_NEW}/build/.config")), "CONFIG_MODULE_SIG_HASH=\"sha512\"\n")
        .unwrap();
    let post = t.run_env(&["install"], format!("usr/lib/modules/{K_NEW}/vmlinuz\n{}", headers_target(K_NEW)), &SIGN);
    post.assert_code(0);
    assert!(!post.stdout.contains("built before the transaction"), "{post}");
    post.expect_line(&[
        "built again: the build from before the transaction left hello.ko unsigned, and this system signs modules",
    ]);
    assert_eq!(signer(&t, K_NEW).as_deref(), certificate.lines().next(), "{post}");
}

#[test]
fn status_names_who_signed_each_module_and_asks_for_a_rebuild_of_unsigned_ones() {
    let t = TestRoot::new();
    fs::create_dir_all(t.path("etc/dkms")).unwrap();
    fs::write(t.path("etc/dkms/framework.conf"), "try_sign_modules=false\n").unwrap();
    t.kernel("linux", K1).headers("linux-headers", K1);
    fs::write(t.path(&format!("usr/lib/modules/{K1}/build/.config")), "CONFIG_MODULE_SIG_HASH=\"sha512\"\n").unwrap();
    t.module_pkg("hello-dkms", "hello-1.0", &dkms_conf("hello", "1.0"));
    t.run_env(&["install"], "usr/src/hello-1.0/dkms.conf\n", &SIGN).assert_code(0);
    let status = t.run(&["status"], "");
    status.assert_code(0);
    status.expect_line(&[&format!("hello/1.0 for {K1}: installed, unsigned")]);

    // Signing turned on: the unsigned module needs attention, with the fix.
    fs::remove_file(t.path("etc/dkms/framework.conf")).unwrap();
    let status = t.run(&["status"], "");
    status.assert_code(1);
    status.expect_line(&[
        &format!("hello/1.0 for {K1}: installed, unsigned: this system signs modules"),
        "`dkms-hook sync` builds it again, signed",
    ]);
    let json = t.run(&["status", "--json"], "");
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["modules"][0]["signature"], "unsigned");

    // The fix given works: sync alone builds it again (privately first, swapped in signed).
    let sync = t.run_env(&["sync"], "", &SIGN);
    sync.assert_code(0);
    sync.expect_line(&[&format!("hello/1.0 for {K1}: rebuilt in"), "replacing the build from before"]);
    let status = t.run(&["status"], "");
    status.assert_code(0);
    status.expect_line(&[&format!("hello/1.0 for {K1}: installed, signed with dkms's key")]);
}
