//! speedscape: Stable Diffusion v1.5 on ONNX Runtime, with schedulers and seeded noise that
//! reproduce Hugging Face diffusers, for comparing diffusion acceleration methods.

pub mod bench;
pub mod config;
pub mod doctor;
pub mod exercises;
pub mod interrupt;
pub mod models;
pub mod pipeline;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod schedulers;
pub mod sweep;
pub mod tui;
pub mod worker;
