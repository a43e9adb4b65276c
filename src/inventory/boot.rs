//! The boot image generators a system has: which of mkinitcpio, dracut and booster the local
//! pacman database says are installed, and mkinitcpio's presets on disk. Nothing is guessed from
//! programs lying around: a generator counts only when its package is installed.

use std::collections::BTreeSet;

use alpm::Alpm;

use crate::domain::Layout;

/// A boot image generator, by its Arch package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Generator {
    Mkinitcpio,
    Dracut,
    Booster,
}

impl Generator {
    /// Every generator, in the order one is chosen when several are installed.
    pub const ALL: [Generator; 3] = [Generator::Mkinitcpio, Generator::Dracut, Generator::Booster];

    /// Its package, and the program it runs.
    pub fn name(self) -> &'static str {
        match self {
            Generator::Mkinitcpio => "mkinitcpio",
            Generator::Dracut => "dracut",
            Generator::Booster => "booster",
        }
    }
}

/// What the system has to make boot images with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boot {
    /// The installed generators, in [`Generator::ALL`]'s order.
    pub generators: Vec<Generator>,
    /// mkinitcpio's presets (`/etc/mkinitcpio.d/NAME.preset`), by name.
    pub presets: BTreeSet<String>,
}

/// Reads the generators from the local database (`handle`) and the presets below `layout`'s root.
pub fn read(layout: &Layout, handle: &Alpm) -> Boot {
    let generators: Vec<Generator> =
        Generator::ALL.into_iter().filter(|g| handle.localdb().pkg(g.name()).is_ok()).collect();
    let mut presets = BTreeSet::new();
    if generators.contains(&Generator::Mkinitcpio) {
        let dir = layout.on_root(std::path::Path::new("/etc/mkinitcpio.d"));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(preset) = name.strip_suffix(".preset") {
                presets.insert(preset.to_owned());
            }
        }
    }
    Boot { generators, presets }
}
