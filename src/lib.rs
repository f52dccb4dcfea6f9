//! speedscape: Stable Diffusion v1.5 on ONNX Runtime, with schedulers and seeded noise that
//! reproduce Hugging Face diffusers, for comparing diffusion acceleration methods.
//!
//! The engine is the `speedscape-core` crate (re-exported below under its module names); this
//! crate is the app around it.
//!
//! # Module map
//!
//! A module may use the ones above it in this list, never those below (the engine's layers are
//! the crate's own, in `core/src/lib.rs`; `tests/layers.rs` checks this map):
//!
//! | module | owns | may use |
//! |---|---|---|
//! | engine: `error`, `rng`, `runtime`, `schedulers`, `quality`, `models`, `pipeline` | speedscape-core | — |
//! | `interrupt` | SIGINT/SIGTERM/SIGHUP: the cancel flag and the exit codes | — |
//! | `report` | output files, tables, contact sheets, error text | engine |
//! | `exercises` | the course's exercises: their runs, questions, cheat sheet | engine, `report` |
//! | `sweep` | the speed landscape: its methods, points, outputs, plot | engine, `report`, `exercises` |
//! | `config` | config.toml as data: serde structs, defaults, validation | engine, `exercises`, `sweep` |
//! | `open` | opening what config names: ONNX Runtime, the model folder | engine, `config` |
//! | `worker` | the inference thread: jobs in, events out | engine, `config`, `open`, `report` |
//! | `doctor`, `inventory` | the environment report, the model folder report | engine, `config`, `open` |
//! | `bench` | `speedscape bench` | engine, `config`, `open`, `worker`, `report` |
//! | `tui` | the terminal UI | everything above |
//!
//! Inside `tui/`, the App's update is split across `app.rs`, `cheat.rs` and `landscape.rs`, and
//! its drawing across `ui.rs`, `cheat_ui.rs` and `landscape_ui.rs`: those two groups import each
//! other by design (one state, one draw), the only import cycles in the crate.

pub use speedscape_core::{error, models, pipeline, quality, rng, runtime, schedulers};

pub mod bench;
pub mod config;
pub mod doctor;
pub mod exercises;
pub mod interrupt;
pub mod inventory;
pub mod open;
pub mod report;
pub mod sweep;
pub mod tui;
pub mod worker;
