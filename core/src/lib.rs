//! speedscape-core: Stable Diffusion v1.5 on ONNX Runtime, with schedulers and seeded noise
//! that reproduce Hugging Face diffusers — same seed, same timesteps, same image.
//!
//! The engine of speedscape (a terminal app for comparing diffusion acceleration methods),
//! usable on its own: open ONNX Runtime ([`runtime::Runtime`]) and an exported model folder
//! ([`models::Model`]), describe the image ([`pipeline::Request::new`], with a
//! [`schedulers::SchedulerKind`]), and generate ([`pipeline::generate`]). See
//! `examples/txt2img.rs`.
//!
//! # Layers
//!
//! Each module may use only the ones listed before it (the compiler enforces that nothing here
//! reaches the app: this crate does not depend on it):
//!
//! | module | owns | may use |
//! |---|---|---|
//! | [`rng`] | seeded noise that means what PyTorch's does (CPU and CUDA generators) | — |
//! | [`runtime`] | ONNX Runtime: library discovery, providers, sessions, tensors, the GPU | — |
//! | [`schedulers`] | diffusers' schedulers, step for step | `rng` |
//! | [`quality`] | image metrics: SSIM, PSNR, roughness, pixelation | — |
//! | [`models`] | the model folder: manifest, tokenizer, components, UNet variants, CLIP scorer | `runtime`, `schedulers` |
//! | [`pipeline`] | a prompt to an image: encode, denoise, decode; timings, previews, limits | `models`, `rng`, `runtime`, `schedulers` |

#![deny(missing_docs)]

pub mod models;
pub mod pipeline;
pub mod quality;
pub mod rng;
pub mod runtime;
pub mod schedulers;
