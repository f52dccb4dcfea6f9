//! Which VAE decoder a model's runs decode with (`[model] vae_precision`): the float16 one an fp16
//! export writes beside the float32 one (`vae_decoder_fp16/`), where it is chosen, with the
//! float32 one kept for the pipeline to decode again when float16 overflows (SD's VAE decoder
//! can: NaN or Inf in the image).

use std::time::Instant;

use eyre::bail;
use serde::{Deserialize, Serialize};

use super::{Model, VaeDecoder, component_file};
use crate::error::Fixable;
use crate::runtime::Runtime;

/// The float16 VAE decoder's folder in an fp16 export (`models/export.py --dtype fp16`).
pub const VAE_FP16_FOLDER: &str = "vae_decoder_fp16";

/// `[model] vae_precision`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VaePrecision {
    /// float16 on a GPU when the folder has `vae_decoder_fp16/`, else float32.
    #[default]
    Auto,
    /// Always `vae_decoder/` (float32 in speedscape's exports).
    Fp32,
    /// `vae_decoder_fp16/` on any provider (an error when the folder has none).
    Fp16,
}

/// Whether runs decode with `vae_decoder_fp16/`: `precision` on a GPU (`gpu`) or not, for a
/// folder that has one (`has_fp16`) or not.
pub(crate) fn decodes_in_fp16(
    precision: VaePrecision,
    gpu: bool,
    has_fp16: bool,
    root: &std::path::Path,
) -> eyre::Result<bool> {
    match precision {
        VaePrecision::Fp32 => Ok(false),
        VaePrecision::Auto => Ok(gpu && has_fp16),
        VaePrecision::Fp16 if has_fp16 => Ok(true),
        VaePrecision::Fp16 => bail!(Fixable::new(
            format!(
                "vae_precision = \"fp16\", but {} has no {VAE_FP16_FOLDER}/ (only fp16 exports write one)",
                root.display()
            ),
            "re-export with `speedscape models export --fp16` (models/export.py --dtype fp16), or set [model] vae_precision = \"auto\" or \"fp32\"",
        )),
    }
}

impl Model {
    /// Decodes with `vae_decoder_fp16/` from now on where `precision` says so (its session
    /// created now, its time recorded as `vae_decoder_fp16`'s), keeping `vae_decoder/` for the
    /// re-decodes; otherwise `vae_decoder/` alone, as opened. Meant for right after opening (the
    /// app calls it once per model); a second call keeps what the first chose.
    pub fn use_vae(&mut self, rt: &Runtime, precision: VaePrecision) -> eyre::Result<()> {
        let has_fp16 = self.root.join(VAE_FP16_FOLDER).join("model.onnx").is_file();
        let fp16 = decodes_in_fp16(precision, rt.provider.is_gpu(), has_fp16, &self.root)?;
        if !fp16 || self.vae_fp32.is_some() {
            return Ok(());
        }
        let start = Instant::now();
        let mut half = VaeDecoder::load(rt, &component_file(&self.root, VAE_FP16_FOLDER)?)?;
        half.vae_scale = self.vae.vae_scale;
        self.load_times
            .push((VAE_FP16_FOLDER.to_string(), start.elapsed()));
        self.vae_fp32 = Some(std::mem::replace(&mut self.vae, half));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn auto_takes_fp16_on_a_gpu_with_the_folder_only() {
        let root = Path::new("/m");
        for (gpu, has, want) in [
            (true, true, true),
            (true, false, false),
            (false, true, false),
            (false, false, false),
        ] {
            assert_eq!(
                decodes_in_fp16(VaePrecision::Auto, gpu, has, root).unwrap(),
                want,
                "gpu {gpu}, folder {has}"
            );
        }
        assert!(!decodes_in_fp16(VaePrecision::Fp32, true, true, root).unwrap());
        assert!(decodes_in_fp16(VaePrecision::Fp16, false, true, root).unwrap());
    }

    #[test]
    fn fp16_without_the_folder_names_the_cause_and_the_fix() {
        let e = decodes_in_fp16(VaePrecision::Fp16, true, false, Path::new("/m")).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("/m has no vae_decoder_fp16/") && text.contains("--fp16"),
            "{text}"
        );
    }
}
