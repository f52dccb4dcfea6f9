//! ControlNets (`controlnet_<NAME>/model.onnx`): their sessions, their residual outputs, and
//! whether one fits a UNet.
//!
//! ```text
//! controlnet_<NAME>/model.onnx  sample [B,4,h,w], timestep, encoder_hidden_states [B,77,D],
//!                               controlnet_cond [B,3,H,W] in [0,1], conditioning_scale 0-d
//!                             → down_block_res_sample_0 … _{N-1}, mid_block_res_sample (× scale)
//! unet*/model.onnx (with --controlnet at export) also takes
//!                               down_block_additional_residual_0 … _{N-1}, mid_block_additional_residual
//! ```
//! The residuals stay ONNX Runtime values from one graph to the other: on the GPU they stay in
//! device memory, and nothing converts them between the ControlNet and the UNet.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eyre::{WrapErr, eyre};
use ndarray::{ArrayView3, ArrayView4, Axis};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{RunOptions, Session};
use ort::value::DynValue;

use super::{component_name, find, is_float, mismatch, run_error};
use crate::error::Fixable;
use crate::runtime::Runtime;
use crate::runtime::failure::MemoryContext;
use crate::runtime::tensor::{self, IoSpec};

/// Folder prefix of a ControlNet in a model folder (`controlnet_canny`).
pub const CONTROLNET_PREFIX: &str = "controlnet_";
const DOWN_OUT: &str = "down_block_res_sample_";
const MID_OUT: &str = "mid_block_res_sample";
/// The UNet's residual inputs: `down_block_additional_residual_<i>` and the mid block's.
pub(crate) const DOWN_IN: &str = "down_block_additional_residual_";
pub(crate) const MID_IN: &str = "mid_block_additional_residual";

/// `specs` named `<down><i>` for i = 0, 1, … then `mid`, in that order; `None` when there are
/// none of them; an error naming what is wrong when the set is incomplete.
pub(crate) fn ordered_residuals(
    specs: &[IoSpec],
    down: &str,
    mid: &str,
) -> Result<Option<Vec<IoSpec>>, String> {
    let mut downs: Vec<(usize, &IoSpec)> = specs
        .iter()
        .filter_map(|s| Some((s.name.strip_prefix(down)?.parse().ok()?, s)))
        .collect();
    let mid_spec = specs.iter().find(|s| s.name == mid);
    if downs.is_empty() && mid_spec.is_none() {
        return Ok(None);
    }
    downs.sort_by_key(|(i, _)| *i);
    if downs.iter().enumerate().any(|(k, (i, _))| k != *i) {
        let got: Vec<String> = downs.iter().map(|(i, _)| i.to_string()).collect();
        return Err(format!(
            "{down}<i> must run 0, 1, 2, … without gaps; the graph has {}",
            got.join(", ")
        ));
    }
    let Some(mid_spec) = mid_spec else {
        return Err(format!("{} {down}<i> but no {mid}", downs.len()));
    };
    if let Some(bad) = downs
        .iter()
        .map(|(_, s)| *s)
        .chain([mid_spec])
        .find(|s| s.rank() != 4 || !is_float(s.elem))
    {
        return Err(format!(
            "{} is {}, not a float[B,C,h,w]",
            bad.name,
            bad.describe()
        ));
    }
    Ok(Some(
        downs
            .into_iter()
            .map(|(_, s)| s.clone())
            .chain([mid_spec.clone()])
            .collect(),
    ))
}

/// A ControlNet's residuals for one UNet call, in the UNet's input order (the down blocks'
/// from the first, then the mid block's), of the graphs' element type.
pub struct Residuals {
    pub(crate) values: Vec<DynValue>,
}

/// A ControlNet session.
pub struct ControlNet {
    session: Session,
    sample: IoSpec,
    timestep: IoSpec,
    context: IoSpec,
    cond: IoSpec,
    scale: IoSpec,
    /// The residual outputs in order ([`ordered_residuals`]).
    outputs: Vec<IoSpec>,
    /// Where the residuals are left: the GPU's memory on CUDA, else the host's.
    output_memory: MemoryInfo<'static>,
    pub(crate) file: PathBuf,
    /// Time inside ONNX Runtime's run calls so far.
    pub(crate) ort: Duration,
    memory: MemoryContext,
}

impl ControlNet {
    /// A session for `file`, checked against the layout in the module's doc.
    pub fn load(rt: &Runtime, file: &Path) -> eyre::Result<Self> {
        let session = rt.session(file)?;
        let inputs = tensor::inputs(&session);
        let expected = "sample float[B,4,h,w], timestep (0-d or 1-d), encoder_hidden_states float[B,77,D], controlnet_cond float[B,3,H,W], conditioning_scale (0-d)";
        let float4 = |name| find(&inputs, name).filter(|s| s.rank() == 4 && is_float(s.elem));
        let sample = float4("sample");
        let cond = float4("controlnet_cond");
        let timestep = find(&inputs, "timestep").filter(|s| s.rank() <= 1);
        let context =
            find(&inputs, "encoder_hidden_states").filter(|s| s.rank() == 3 && is_float(s.elem));
        let scale = find(&inputs, "conditioning_scale").filter(|s| s.rank() <= 1);
        let (Some(sample), Some(timestep), Some(context), Some(cond), Some(scale)) =
            (sample, timestep, context, cond, scale)
        else {
            return Err(mismatch(file, "ControlNet", expected, &inputs));
        };
        let outputs = match ordered_residuals(&tensor::outputs(&session), DOWN_OUT, MID_OUT) {
            Ok(Some(o)) => o,
            Ok(None) => {
                return Err(eyre!(
                    "{} is not a ControlNet: it has no {DOWN_OUT}<i> / {MID_OUT} outputs",
                    file.display()
                ));
            }
            Err(e) => return Err(eyre!("{}: {e}", file.display())),
        };
        let output_memory = if rt.provider.is_gpu() {
            let id = rt.options.cuda.device_id;
            MemoryInfo::new(
                AllocationDevice::CUDA,
                id,
                AllocatorType::Device,
                MemoryType::Default,
            )
        } else {
            MemoryInfo::new(
                AllocationDevice::CPU,
                0,
                AllocatorType::Device,
                MemoryType::Default,
            )
        }
        .map_err(|e| eyre!("{}: output memory: {e}", file.display()))?;
        Ok(Self {
            sample: sample.clone(),
            timestep: timestep.clone(),
            context: context.clone(),
            cond: cond.clone(),
            scale: scale.clone(),
            session,
            outputs,
            output_memory,
            file: file.to_path_buf(),
            ort: Duration::ZERO,
            memory: rt.memory_context(),
        })
    }

    /// How many residuals it gives (the down blocks' and the mid block's).
    pub fn residual_count(&self) -> usize {
        self.outputs.len()
    }

    /// The residual outputs, in order.
    pub(crate) fn residual_specs(&self) -> &[IoSpec] {
        &self.outputs
    }

    /// Width of the text embeddings it attends to, when the graph fixes it.
    pub fn context_dim(&self) -> Option<usize> {
        self.context
            .shape
            .get(2)
            .and_then(|d| usize::try_from(*d).ok())
    }

    /// `image` `[1, 3, H, W]` as the graph's `controlnet_cond` for a batch of `batch` (the
    /// image repeated, as diffusers repeats it under guidance): made once per run.
    pub fn cond_input(&self, image: ArrayView4<f32>, batch: usize) -> eyre::Result<DynValue> {
        let views = vec![image; batch];
        let stacked = ndarray::concatenate(Axis(0), &views)?;
        tensor::float_input(stacked.view().into_dyn(), self.cond.elem)
    }

    /// The residuals for `sample` `[B, 4, h, w]` at `t` with `context` `[B, 77, D]` under the
    /// control image `cond` ([`ControlNet::cond_input`]) at `scale`.
    pub fn residuals(
        &mut self,
        sample: ArrayView4<f32>,
        t: f32,
        context: ArrayView3<f32>,
        cond: &DynValue,
        scale: f32,
        options: Option<&RunOptions>,
    ) -> eyre::Result<Residuals> {
        let shape = sample.shape().to_vec();
        let doing = format!(
            "running the ControlNet {} (batch {})",
            component_name(&self.file),
            shape[0]
        );
        let (memory, file) = (self.memory, self.file.clone());
        let e = |err: ort::Error| run_error(memory, &doing, &file, err);
        let ts_shape: Vec<usize> = match self.timestep.shape.first() {
            None => vec![],
            Some(&d) if d > 0 => vec![d as usize],
            Some(_) => vec![shape[0]],
        };
        let x = tensor::float_input(sample.into_dyn(), self.sample.elem)?;
        let ts = tensor::timestep_input(t, &ts_shape, self.timestep.elem)
            .wrap_err_with(|| format!("{}: timestep input", self.file.display()))?;
        let ctx = tensor::float_input(context.into_dyn(), self.context.elem)?;
        let scale_shape: Vec<usize> = self.scale.shape.iter().map(|_| 1).collect();
        let sc = tensor::float_input(
            ndarray::ArrayD::from_elem(scale_shape, scale).view(),
            self.scale.elem,
        )?;
        let mut binding = self.session.create_binding().map_err(e)?;
        for (name, value) in [
            (&self.sample.name, &x),
            (&self.timestep.name, &ts),
            (&self.context.name, &ctx),
            (&self.cond.name, cond),
            (&self.scale.name, &sc),
        ] {
            binding.bind_input(name.as_str(), value).map_err(e)?;
        }
        for out in &self.outputs {
            binding
                .bind_output_to_device(out.name.as_str(), &self.output_memory)
                .map_err(e)?;
        }
        let start = Instant::now();
        let mut outputs = match options {
            Some(o) => self.session.run_binding_with_options(&binding, o),
            None => self.session.run_binding(&binding),
        }
        .map_err(e)?;
        self.ort += start.elapsed();
        let values = self
            .outputs
            .iter()
            .map(|o| {
                outputs
                    .remove(o.name.as_str())
                    .ok_or_else(|| eyre!("{}: no output {}", self.file.display(), o.name))
            })
            .collect::<eyre::Result<Vec<_>>>()?;
        Ok(Residuals { values })
    }
}

/// Whether `controlnet` fits a UNet taking residual inputs `unet_inputs` with text width
/// `unet_context`: the same number of residuals, the same element type, the same fixed
/// channels, the same text width. Otherwise a [`Fixable`] naming both shapes (a ControlNet for
/// SD 2 or SDXL on an SD v1.5 model, say).
pub(crate) fn check_fits(
    controlnet: &ControlNet,
    name: &str,
    unet_inputs: &[IoSpec],
    unet_context: Option<usize>,
    unet_label: &str,
) -> eyre::Result<()> {
    let fix = "use a ControlNet trained for this model's base (SD v1.5 ControlNets for an SD v1.5 model), or export the model it belongs to";
    if let (Some(c), Some(u)) = (controlnet.context_dim(), unet_context)
        && c != u
    {
        return Err(eyre!(Fixable::new(
            format!(
                "the ControlNet {name} attends to {c}-wide text embeddings, the UNet {unet_label} to {u}-wide ones (SD v1.5: 768, SD 2: 1024, SDXL: 2048): it was made for another base model"
            ),
            fix
        )));
    }
    let channels = |specs: &[IoSpec]| -> Vec<String> {
        specs
            .iter()
            .map(|s| match s.shape.get(1) {
                Some(&c) if c > 0 => c.to_string(),
                _ => "?".to_string(),
            })
            .collect()
    };
    let (ours, theirs) = (controlnet.residual_specs(), unet_inputs);
    let clash = ours.len() != theirs.len()
        || ours.iter().zip(theirs).any(|(a, b)| {
            a.elem != b.elem
                || matches!((a.shape.get(1), b.shape.get(1)), (Some(&x), Some(&y)) if x > 0 && y > 0 && x != y)
        });
    if clash {
        return Err(eyre!(Fixable::new(
            format!(
                "the ControlNet {name} gives {} residuals with channels [{}] ({}), the UNet {unet_label} takes {} with channels [{}] ({}): they belong to different base models or exports",
                ours.len(),
                channels(ours).join(", "),
                ours.first().map_or("?", |s| tensor::elem_name(s.elem)),
                theirs.len(),
                channels(theirs).join(", "),
                theirs.first().map_or("?", |s| tensor::elem_name(s.elem)),
            ),
            format!(
                "{fix}; a ControlNet and the UNets must come from one export with the same --dtype"
            )
        )));
    }
    Ok(())
}

/// The ControlNets in `root`: the names of its `controlnet_<NAME>/` folders holding a
/// `model.onnx`, sorted.
pub fn folder_controlnets(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let e = e.ok()?;
                    let name = e
                        .file_name()
                        .to_str()?
                        .strip_prefix(CONTROLNET_PREFIX)?
                        .to_string();
                    e.path().join("model.onnx").is_file().then_some(name)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use ort::value::TensorElementType;

    fn spec(name: &str, shape: &[i64]) -> IoSpec {
        IoSpec {
            name: name.to_string(),
            elem: TensorElementType::Float32,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn residuals_are_ordered_by_index_then_the_mid_block() {
        let specs = [
            spec("sample", &[-1, 4, -1, -1]),
            spec("down_block_additional_residual_10", &[-1, 1280, -1, -1]),
            spec("mid_block_additional_residual", &[-1, 1280, -1, -1]),
            spec("down_block_additional_residual_2", &[-1, 320, -1, -1]),
            spec("down_block_additional_residual_0", &[-1, 320, -1, -1]),
            spec("down_block_additional_residual_1", &[-1, 320, -1, -1]),
        ];
        let err = ordered_residuals(&specs, DOWN_IN, MID_IN).unwrap_err();
        assert!(err.contains("0, 1, 2, 10"), "{err}");
        let gap = ordered_residuals(&specs[..3], DOWN_IN, MID_IN).unwrap_err();
        assert!(gap.contains("has 10"), "index 10 alone is a gap: {gap}");
        let ok = [
            specs[4].clone(),
            specs[5].clone(),
            specs[3].clone(),
            specs[2].clone(),
        ];
        let names: Vec<String> = ordered_residuals(&ok, DOWN_IN, MID_IN)
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            [
                "down_block_additional_residual_0",
                "down_block_additional_residual_1",
                "down_block_additional_residual_2",
                "mid_block_additional_residual"
            ]
        );
        assert!(matches!(
            ordered_residuals(&specs[..1], DOWN_IN, MID_IN),
            Ok(None)
        ));
        let no_mid = [specs[4].clone()];
        assert!(
            ordered_residuals(&no_mid, DOWN_IN, MID_IN)
                .unwrap_err()
                .contains("no mid")
        );
    }
}
