//! The preview decoder (`preview_decoder/model.onnx`): a tiny learned decoder (TAESD for SD
//! v1.5, a distilled micro-TAESD for the micro model) that turns a step's x0 prediction into an
//! RGB image at full resolution, cheaply enough to run every step. The final image still comes
//! from the real VAE.
//!
//! ```text
//! latents [B, 4, h, w]  the scheduler's latents as they are (NOT divided by scaling_factor), fp32|fp16
//! image   [B, 3, H, W]  RGB in [0, 1] (clamped inside the graph), H = h · vae_scale_factor
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eyre::{bail, eyre};
use ndarray::{Array4, ArrayView4, Ix4};
use ort::session::Session;

use super::{describe_all, latents_input, run_error};
use crate::runtime::Runtime;
use crate::runtime::failure::MemoryContext;
use crate::runtime::tensor::{self, IoSpec};

/// The preview decoder's folder inside a model folder.
pub const PREVIEW_DECODER_FOLDER: &str = "preview_decoder";

/// A session of the preview decoder.
pub struct PreviewDecoder {
    session: Session,
    input: IoSpec,
    output: String,
    /// Its `model.onnx`.
    pub file: PathBuf,
    /// Time spent inside ONNX Runtime's run calls so far.
    pub ort: Duration,
    memory: MemoryContext,
}

impl PreviewDecoder {
    /// Whether the model folder `root` has a preview decoder (filesystem only).
    pub fn present(root: &Path) -> bool {
        root.join(PREVIEW_DECODER_FOLDER)
            .join("model.onnx")
            .is_file()
    }

    /// A session for `file`, checked: `latents` of rank 4 (`[B, 4, h, w]`, float32 or float16)
    /// in, `image` of rank 4 out; otherwise an error listing what the graph has.
    pub fn load(rt: &Runtime, file: &Path) -> eyre::Result<Self> {
        let session = rt.side_session(file)?;
        let input = latents_input(&session, file, "latents", "preview decoder")?;
        let outputs = tensor::outputs(&session);
        let output = outputs
            .iter()
            .find(|o| o.name == "image")
            .filter(|o| o.rank() == 4)
            .map(|o| o.name.clone())
            .ok_or_else(|| {
                eyre!(
                    "{} has no image output of rank 4 ([batch, 3, H, W]); found outputs {}",
                    file.display(),
                    describe_all(&outputs)
                )
            })?;
        Ok(Self {
            session,
            input,
            output,
            file: file.to_path_buf(),
            ort: Duration::ZERO,
            memory: rt.memory_context(),
        })
    }

    /// `fp16` or `fp32`: the type the graph takes its latents in.
    pub fn io_precision(&self) -> &'static str {
        super::precision_name(self.input.elem)
    }

    /// Image `[batch, 3, H, W]` in [0, 1] from the scheduler's latents `[batch, 4, h, w]`.
    pub fn decode(&mut self, latents: ArrayView4<f32>) -> eyre::Result<Array4<f32>> {
        let [b, _, h, w] = latents.shape() else {
            bail!(
                "latents of shape {:?}, expected [batch, 4, h, w]",
                latents.shape()
            );
        };
        let doing = format!("running the preview decoder at {w}×{h} latents (batch {b})");
        let x = tensor::float_input(latents.into_dyn(), self.input.elem)?;
        let start = Instant::now();
        let outputs = self
            .session
            .run(ort::inputs![self.input.name.as_str() => x])
            .map_err(|e| run_error(self.memory, &doing, &self.file, e))?;
        self.ort += start.elapsed();
        let out = tensor::float_output(&outputs[self.output.as_str()])?;
        Ok(out.into_dimensionality::<Ix4>()?)
    }
}
