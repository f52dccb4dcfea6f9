//! speedscape: Stable Diffusion v1.5 on ONNX Runtime, with schedulers and seeded noise that
//! reproduce Hugging Face diffusers, for comparing diffusion acceleration methods.
//!
//! The engine is the `speedscape-core` crate (`core/`, re-exported below under its module
//! names: `rng`, `runtime`, `schedulers`, `quality`, `error`, `lora`, `models`, `pipeline`); this crate is
//! the app around it.
//!
//! # Module map
//!
//! Layers from the bottom up: a file may use the files of lower layers (and the engine), never
//! those of its own or a higher one; inside the TUI's layer, the App's update (`app.rs`,
//! `cheat.rs`, `landscape.rs`) and its drawing (`ui.rs`, `cheat_ui.rs`, `landscape_ui.rs`)
//! import each other by design (one state, one draw): the crate's only import cycles.
//! `tests/layers.rs` reads this table and checks every import against it. The engine's own
//! layers are in `core/src/lib.rs`; the command line (`src/cli/`, in the binary) is above all.
//!
//! | layer | files | what they own |
//! |---|---|---|
//! | 1 | `interrupt`, `install`, `worker::protocol`, `report::error_text`, `report::sheet` | signals and exit codes; a wheel or a checkout, and the user's config and cache folders; the worker's jobs and events; an error as users read it; contact sheets |
//! | 2 | `report`, `report::table` | output files written whole; the timing table, its rows folded from worker events |
//! | 3 | `exercises`, `sweep::prompt_set` | the exercises as data: runs, questions, what happened; prompt sets (`--prompts FILE`) |
//! | 4 | `sweep` | the speed landscape: methods, points, knees |
//! | 5 | `sweep::plot` | the landscape's plot (SVG, PNG) |
//! | 6 | `config` | config.toml as data: serde structs, defaults, validation |
//! | 7 | `open`, `worker::previews` | opening what config names: ONNX Runtime, the model folder; the worker's preview thread (latest wins) |
//! | 8 | `worker` | the inference thread: jobs in, events out |
//! | 9 | `inventory`, `bench`, `exercises::headless`, `export` | the model folder report; `speedscape bench`; exercises run headless; `speedscape models export` (SD v1.5 through the packaged exporter) |
//! | 10 | `exercises::cheatsheet`, `sweep::headless` | the cheat sheet's verified choices; sweeps run through the worker |
//! | 11 | `sweep::output`, `sweep::shard` | the landscape's files: summary, CSV, JSON, plot, images; sharded sweeps: the plan file, each shard's share and its resumable run files, the merge |
//! | 12 | `tui`, `tui::*` | the terminal UI |
//! | 13 | `doctor` | the environment report (the terminal and the graphics the TUI would pick there included) |

pub use speedscape_core::{error, lora, models, pipeline, quality, rng, runtime, schedulers};

pub mod bench;
pub mod config;
pub mod doctor;
pub mod exercises;
pub mod export;
pub mod install;
pub mod interrupt;
pub mod inventory;
pub mod open;
pub mod report;
pub mod sweep;
pub mod tui;
pub mod worker;
