//! dkms-hook as a library: the stages of a run, each usable and testable on its own.
//! The binary (`main.rs`) wires them together; fuzz targets and benchmarks call them directly.

pub mod cli;
pub mod config;
pub mod inventory;
pub mod plan;
pub mod report;
pub mod run;
pub mod targets;
