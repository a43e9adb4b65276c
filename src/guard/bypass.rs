//! Turning the guard off: `guard = false` in the configuration, or `DKMS_HOOK_GUARD=off` for one
//! pacman run. The variable works whatever else is wrong, a broken configuration included.

use std::process::ExitCode;

use crate::config::Verbosity;
use crate::report::Reporter;

/// The environment variable that turns the guard off for one pacman run.
pub const BYPASS_VARIABLE: &str = "DKMS_HOOK_GUARD";

/// When the bypass variable turns the guard off: says so; the exit status.
pub fn bypassed() -> Option<ExitCode> {
    let why = disabled(true, std::env::var(BYPASS_VARIABLE).ok().as_deref())?;
    say_off(&why);
    Some(ExitCode::SUCCESS)
}

/// Says that the guard is off, and why.
pub(super) fn say_off(why: &str) {
    let reporter = Reporter::new(Verbosity::Normal);
    reporter.print(&format!("==> DKMS guard off ({why}): modules are not test-built before the transaction\n"));
}

/// Why the guard is off, if it is: the configuration, or the bypass variable.
pub fn disabled(configured: bool, variable: Option<&str>) -> Option<String> {
    if !configured {
        return Some("guard = false in the configuration".to_owned());
    }
    match variable.map(str::trim) {
        Some(v) if ["off", "0", "no", "false"].contains(&v.to_ascii_lowercase().as_str()) => {
            Some(format!("{BYPASS_VARIABLE}={v}"))
        }
        _ => None,
    }
}
