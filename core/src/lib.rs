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
//! | [`error`] | errors that keep their parts: the cause and the fix as fields | — |
//! | [`rng`] | seeded noise that means what PyTorch's does (CPU and CUDA generators) | — |
//! | [`runtime`] | ONNX Runtime: library discovery, providers, sessions, tensors, the GPU | `error` |
//! | [`schedulers`] | diffusers' schedulers, step for step | `error`, `rng` |
//! | [`quality`] | image metrics: SSIM, PSNR, roughness, pixelation; Canny edge maps and control adherence (edge F1) | `error` |
//! | [`lora`] | LoRA adapters at run time: files, mapping to the graph, fusion into initializers | `error`, `runtime` |
//! | [`models`] | the model folder: manifest, tokenizer, components, UNet variants, CLIP scorer | `error`, `lora`, `runtime`, `schedulers` |
//! | [`pipeline`] | a prompt to an image: encode, denoise, decode; timings, previews, limits; the control image | `error`, `lora`, `models`, `quality`, `rng`, `runtime`, `schedulers` |

#![deny(missing_docs)]

pub mod error;
pub mod lora;
pub mod models;
pub mod pipeline;
pub mod quality;
pub mod rng;
pub mod runtime;
pub mod schedulers;
