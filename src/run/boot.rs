//! Runs the boot image generators `plan::boot` chose, one kernel after the other (a generator
//! uses every core itself). On a relocated root (`--root`) the generator runs chrooted into it,
//! where its configuration and the kernel's modules are.

use std::process::Command;

use crate::domain::Layout;
use crate::interrupt::Stop;
use crate::plan::boot::Regenerate;
use crate::process::{self, Options};

/// How one regeneration went: `Err` holds what to tell the user.
pub fn regenerate(layout: &Layout, regen: &Regenerate, stop: &Stop) -> Result<(), String> {
    let cmd = match layout.is_relocated() {
        true => {
            let mut cmd = Command::new("chroot");
            cmd.arg(&layout.root).args(&regen.argv);
            cmd
        }
        false => {
            let mut cmd = Command::new(&regen.argv[0]);
            cmd.args(&regen.argv[1..]);
            cmd
        }
    };
    match process::run(cmd, &Options::new(stop)) {
        Ok(done) if done.code() == Some(0) => Ok(()),
        Ok(done) => {
            let tail: Vec<String> = done.text().lines().rev().take(5).map(str::to_owned).collect();
            let tail: Vec<String> = tail.into_iter().rev().collect();
            Err(format!(
                "{} failed ({}): {}",
                regen.argv.join(" "),
                done.code().map_or_else(|| "killed".to_owned(), |c| format!("exit {c}")),
                tail.join(" / ")
            ))
        }
        Err(e) => Err(format!("cannot run {}: {e}", regen.argv[0])),
    }
}
