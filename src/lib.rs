//! dkms-hook as a library: the stages of a run, each usable and testable on its own, and the
//! commands built from them. The binaries only dispatch: `bin/dkms-hook-full.rs` (the whole
//! program) to a command; `main.rs` (`/usr/bin/dkms-hook`, without libalpm) answers the install
//! hook's quiet path from files (`hook::run_from_files`) and runs the whole program otherwise.
//! Fuzz targets and tests call the stages directly.
//!
//! The house has ten floors. A file may use the files of the floors below its own, and files of
//! its own floor as long as no two of them use each other (no circle); never a floor above. A
//! module's unit tests may use anything. `tests/layers.rs` reads this list and holds the code to it.
//!
//! 1. tools: `atomic`, `dirs`, `digest`, `interrupt`, `process`, `lock` — whole-file writes,
//!    directories, content digests, signals, child processes, the run's lock: nothing of dkms or pacman.
//! 2. words: `domain`, `cli`, `targets` — the vocabulary every layer speaks (module, job, outcome,
//!    operation, layout, signing key), the command line, pacman's targets.
//! 3. settings: `config` — the command line over `/etc/dkms-hook.toml` over defaults, resolved once.
//! 4. records: `state`, `kept`, `prebuilt`, `coming`, `rebuilt` — dkms-hook's own files on disk.
//! 5. reading: `inventory` — the system as it is, read once into owned data: libalpm, package
//!    files, dkms.conf, the dkms tree, the records, the running transaction.
//! 6. planning: `plan` — targets and inventory in, a plan out; no file system, no processes.
//! 7. running: `run` — the only code that spawns dkms and depmod.
//! 8. telling: `report`, `logs` — what the user reads, on the terminal and in the job logs.
//! 9. the common run: `session` — root check, signals, lock, inventory, run, report, state.
//! 10. commands: `hook`, `guard`, `sync`, `status`, `lint`, `generate` — what `main` dispatches to.

pub mod atomic;
pub mod digest;
pub mod dirs;
pub mod interrupt;
pub mod lock;
pub mod process;

pub mod cli;
pub mod domain;
pub mod targets;

pub mod config;

pub mod coming;
pub mod kept;
pub mod prebuilt;
pub mod rebuilt;
pub mod state;

pub mod inventory;

pub mod plan;

pub mod run;

pub mod logs;
pub mod report;

pub mod session;

pub mod generate;
pub mod guard;
pub mod hook;
pub mod lint;
pub mod status;
pub mod sync;
