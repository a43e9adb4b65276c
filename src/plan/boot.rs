//! Which boot images to regenerate after modules changed: exactly the kernels whose modules
//! changed, once each, with the generator the system has (`inventory::boot`), with its own command
//! for one kernel. In a pacman transaction in which mkinitcpio's own hook will run (it watches
//! `usr/src/*/dkms.conf` and the kernels), that hook does it: nothing here. No generator, or
//! `initramfs = "off"`: nothing, and nothing said.

use std::collections::BTreeSet;

use crate::config::Initramfs;
use crate::inventory::boot::Generator;
use crate::inventory::Inventory;

/// One image to regenerate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regenerate {
    pub kver: String,
    pub generator: Generator,
    /// The command line, program first (a name, looked up in PATH).
    pub argv: Vec<String>,
}

/// The images to regenerate for the kernels in `changed` (those still installed); `transaction`:
/// the run is a hook of a pacman transaction.
pub fn regenerate(
    inv: &Inventory,
    changed: &BTreeSet<String>,
    setting: Initramfs,
    transaction: bool,
) -> Vec<Regenerate> {
    let Some(&generator) = inv.boot.generators.first() else { return Vec::new() };
    if setting == Initramfs::Off || (transaction && generator == Generator::Mkinitcpio) {
        return Vec::new();
    }
    changed
        .iter()
        .filter_map(|kver| inv.kernels.get(kver))
        .map(|kernel| {
            let (kver, base) = (kernel.kver.clone(), kernel.pkgbase.as_str());
            let argv: Vec<String> = match generator {
                Generator::Mkinitcpio if inv.boot.presets.contains_key(base) => {
                    vec!["mkinitcpio".into(), "-p".into(), base.into()]
                }
                Generator::Mkinitcpio => {
                    vec![
                        "mkinitcpio".into(),
                        "-k".into(),
                        kver.clone(),
                        "-g".into(),
                        format!("/boot/initramfs-{base}.img"),
                    ]
                }
                Generator::Dracut => {
                    vec![
                        "dracut".into(),
                        "--force".into(),
                        "--kver".into(),
                        kver.clone(),
                        format!("/boot/initramfs-{base}.img"),
                    ]
                }
                Generator::Booster => vec![
                    "booster".into(),
                    "build".into(),
                    "--force".into(),
                    "--kernel-version".into(),
                    kver.clone(),
                    format!("/boot/booster-{base}.img"),
                ],
            };
            Regenerate { kver, generator, argv }
        })
        .collect()
}

/// The boot image of `kernel` the installed generator writes: mkinitcpio's preset's
/// `default_image`, or the generator's own name for it; `None` without a generator.
pub fn image_of(inv: &Inventory, kernel: &crate::inventory::Kernel) -> Option<String> {
    let base = kernel.pkgbase.as_str();
    match inv.boot.generators.first()? {
        Generator::Mkinitcpio => match inv.boot.presets.get(base) {
            Some(Some(image)) => Some(image.clone()),
            _ => Some(format!("/boot/initramfs-{base}.img")),
        },
        Generator::Dracut => Some(format!("/boot/initramfs-{base}.img")),
        Generator::Booster => Some(format!("/boot/booster-{base}.img")),
    }
}

/// The command that regenerates the image of `kernel`, for the user; `None` without a generator.
pub fn command_for(inv: &Inventory, kernel: &crate::inventory::Kernel) -> Option<String> {
    let one: BTreeSet<String> = [kernel.kver.clone()].into();
    regenerate(inv, &one, Initramfs::Auto, false).first().map(|r| r.argv.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Kernel;

    fn system(generators: &[Generator], presets: &[&str]) -> Inventory {
        let mut inv = Inventory::default();
        for (kver, base) in [("6.1-arch", "linux"), ("6.6-lts", "linux-lts")] {
            let kernel = Kernel { kver: kver.into(), package: base.into(), pkgbase: base.into(), headers: None };
            inv.kernels.insert(kver.into(), kernel);
        }
        inv.boot.generators = generators.to_vec();
        inv.boot.presets = presets.iter().map(|p| (p.to_string(), None)).collect();
        inv
    }

    fn lines(regens: &[Regenerate]) -> Vec<String> {
        regens.iter().map(|r| r.argv.join(" ")).collect()
    }

    #[test]
    fn exactly_the_changed_kernels_once_each_with_the_generators_own_command() {
        let changed: BTreeSet<String> = ["6.1-arch", "gone-kernel"].map(String::from).into();
        let cases: [(&[Generator], &[&str], &[&str]); 4] = [
            (&[Generator::Mkinitcpio], &["linux"], &["mkinitcpio -p linux"]),
            (&[Generator::Mkinitcpio], &[], &["mkinitcpio -k 6.1-arch -g /boot/initramfs-linux.img"]),
            (
                &[Generator::Dracut, Generator::Booster],
                &[],
                &["dracut --force --kver 6.1-arch /boot/initramfs-linux.img"],
            ),
            (&[Generator::Booster], &[], &["booster build --force --kernel-version 6.1-arch /boot/booster-linux.img"]),
        ];
        for (generators, presets, want) in cases {
            let got = lines(&regenerate(&system(generators, presets), &changed, Initramfs::Auto, false));
            assert_eq!(got, want, "{generators:?}");
        }
    }

    #[test]
    fn nothing_without_a_generator_when_off_or_when_mkinitcpios_hook_runs() {
        let changed: BTreeSet<String> = ["6.1-arch".to_owned()].into();
        assert!(regenerate(&system(&[], &[]), &changed, Initramfs::Auto, false).is_empty());
        assert!(regenerate(&system(&[Generator::Dracut], &[]), &changed, Initramfs::Off, false).is_empty());
        assert!(regenerate(&system(&[Generator::Mkinitcpio], &["linux"]), &changed, Initramfs::Auto, true).is_empty());
        let dracut = regenerate(&system(&[Generator::Dracut], &[]), &changed, Initramfs::Auto, true);
        assert_eq!(lines(&dracut), ["dracut --force --kver 6.1-arch /boot/initramfs-linux.img"]);
    }
}
