//! A root that looks booted to dkms: pacman runs inside the overlay root as `/`, in a new mount and
//! PID namespace whose PID 1 is chrooted there with a fresh `/proc` (facts §10). dkms's chroot test
//! (`/proc/self/mountinfo` against PID 1's, `/` against `/proc/1/root`) then finds none, dkms ≥ 3.3
//! signs as on a booted system, and pacman runs its hooks without a chroot of its own.

use std::process::{Command, Stdio};
use std::time::Instant;

use super::{tool_env, Root, Transaction};

impl Root {
    /// `pacman ARGS` run inside the root as on a booted system (see the module doc).
    pub fn booted_pacman(&self, args: &[&str]) -> Transaction {
        println!("\n$ (booted) pacman {}", args.join(" "));
        let started = Instant::now();
        let script = r#"mount -t proc proc /proc || exit 99; exec pacman --root / \
            --dbpath /var/lib/pacman --config /etc/pacman.conf --hookdir /etc/pacman.d/hooks \
            --cachedir /var/cache/pacman/pkg --logfile /var/log/pacman.log --gpgdir /etc/pacman.d/gnupg \
            --noconfirm --color never "$@""#;
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--mount", "--fork", "--propagation", "private", "chroot"])
            .arg(&self.root)
            .args(["/bin/bash", "-c", script, "booted"])
            .args(args)
            .stdin(Stdio::null());
        let out = tool_env(&mut cmd).output().expect("cannot run unshare");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        println!("{text}[pacman exit {:?}, {:.1}s]", out.status.code(), started.elapsed().as_secs_f64());
        Transaction { code: out.status.code(), output: text }
    }

    /// `pacman -U PKGS` as on a booted system (the files are read through the overlay), which must
    /// succeed (hooks may still fail).
    pub fn booted_install(&self, pkgs: &[super::Pkg]) -> Transaction {
        let files: Vec<String> = pkgs.iter().map(|p| p.file().to_str().unwrap().to_owned()).collect();
        let mut args = vec!["-U"];
        args.extend(files.iter().map(String::as_str));
        let t = self.booted_pacman(&args);
        assert_eq!(t.code, Some(0), "pacman -U failed:\n{}", t.output);
        t
    }

    /// The (major, minor) version of the dkms in the root (`dkms --version`).
    pub fn dkms_version(&self) -> (u32, u32) {
        let ran = self.chroot(&["dkms", "--version"]);
        let v = ran.output.trim().trim_start_matches("dkms-").to_owned();
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// The subject of the root's dkms certificate (`CN = …`), as `modinfo -F signer` names it.
    pub fn dkms_certificate_subject(&self) -> String {
        let ran =
            self.chroot(&["openssl", "x509", "-inform", "DER", "-in", "/var/lib/dkms/mok.pub", "-noout", "-subject"]);
        assert!(ran.status.success(), "cannot read the root's dkms certificate: {}", ran.output);
        let subject = ran.output.trim().trim_start_matches("subject=").trim();
        subject.rsplit("CN = ").next().unwrap_or(subject).trim().to_owned()
    }
}
