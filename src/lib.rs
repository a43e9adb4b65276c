//! dkms-hook as a library: the stages of a run, each usable and testable on its own, and the
//! commands built from them. The binary (`main.rs`) only dispatches to a command; fuzz targets
//! and tests call the stages directly.

pub mod cli;
pub mod config;
pub mod dirs;
pub mod exclude;
pub mod generate;
pub mod guard;
pub mod hook;
pub mod interrupt;
pub mod inventory;
pub mod kept;
pub mod lint;
pub mod lock;
pub mod logs;
pub mod package;
pub mod plan;
pub mod prebuilt;
pub mod process;
pub mod report;
pub mod run;
pub mod session;
pub mod state;
pub mod status;
pub mod sync;
pub mod targets;
