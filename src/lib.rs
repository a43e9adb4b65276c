//! dkms-hook as a library: the stages of a run, each usable and testable on its own.
//! The binary (`main.rs`) wires them together; fuzz targets and benchmarks call them directly.

pub mod cli;
pub mod config;
pub mod exclude;
pub mod generate;
pub mod interrupt;
pub mod inventory;
pub mod lock;
pub mod logs;
pub mod plan;
pub mod report;
pub mod run;
pub mod state;
pub mod status;
pub mod sync;
pub mod targets;
