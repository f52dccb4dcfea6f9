//! The denoising UNet's session: checked inputs, plain and IoBinding calls (CUDA graphs on
//! the device), and ControlNet residuals where the graph takes them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eyre::{WrapErr, eyre};
use ndarray::{Array4, ArrayView3, ArrayView4, Ix4};
use ort::session::{RunOptions, Session};
use ort::value::{DynValue, TensorElementType};

use super::controlnet::{DOWN_IN, MID_IN, Residuals, ordered_residuals};
use super::{
    DEFAULT_VAE_SCALE, component_name, find, is_float, mismatch, precision_name, run_error,
};
use crate::runtime::Runtime;
use crate::runtime::failure::MemoryContext;
use crate::runtime::tensor::{self, IoSpec};

/// The denoising UNet (base or a variant).
pub struct Unet {
    session: Session,
    sample: IoSpec,
    timestep: IoSpec,
    context: IoSpec,
    output: String,
    output_elem: TensorElementType,
    pub(crate) file: PathBuf,
    /// Time spent inside ONNX Runtime's run calls so far.
    pub(crate) ort: Duration,
    /// The current run's IoBinding ([`Unet::bind_run`]).
    bound: Option<RunBinding>,
    /// Calls that went through a binding so far.
    pub bound_calls: usize,
    /// Size of its folder (graph and weights) on disk: what it takes in memory, roughly.
    pub(crate) bytes: u64,
    memory: MemoryContext,
    /// Pixels per latent cell (the VAE's scale factor), for sizes in messages.
    pub(crate) vae_scale: usize,
    /// ControlNet residual inputs, in order (empty: the graph takes none).
    residuals: Vec<IoSpec>,
    /// Zeros for those inputs in runs without control: `[1, C, 1, 1]` where the graph fixes the
    /// channels (1 where not), which the graph's additions broadcast, so `x + 0` leaves every
    /// activation as it was.
    zeros: Vec<DynValue>,
}

/// One run's IoBinding: the text context is bound once (on the GPU, uploaded once) and the
/// output lands in a buffer kept across steps. With CUDA graphs every input and the output live
/// on the device at fixed addresses (what graph replay needs), filled and read by copies.
struct RunBinding {
    binding: ort::session::IoBinding,
    /// The context the binding holds, to refuse another one silently.
    context_shape: Vec<usize>,
    /// What a call through it does, for messages (`running the UNet unet at 512×512 (batch 2)`).
    doing: String,
    /// CUDA graphs: device-resident sample, timestep and output, and a host buffer for the output.
    device: Option<DeviceBuffers>,
}

struct DeviceBuffers {
    sample: ort::value::DynTensor,
    timestep: ort::value::DynTensor,
    output: ort::value::DynTensor,
    host_output: ort::value::DynTensor,
}

impl Unet {
    /// A session for `file`, checked: `sample` of rank 4 (`[B, 4, h, w]`), `timestep` 0-d or
    /// 1-d, and `encoder_hidden_states` of rank 3 (`[B, 77, D]`) in, float32 or float16;
    /// otherwise an error listing what the graph has.
    pub fn load(rt: &Runtime, file: &Path) -> eyre::Result<Self> {
        Self::from_session(rt, file, rt.session(file)?)
    }

    /// [`Unet::load`] of a session already made (with fused LoRA weights, say).
    pub(super) fn from_session(rt: &Runtime, file: &Path, session: Session) -> eyre::Result<Self> {
        let inputs = tensor::inputs(&session);
        let expected = "sample float[batch,4,h,w], timestep (0-d or 1-d), encoder_hidden_states float[batch,77,D]";
        let sample = find(&inputs, "sample").filter(|s| s.rank() == 4 && is_float(s.elem));
        let timestep = find(&inputs, "timestep").filter(|s| s.rank() <= 1);
        let context =
            find(&inputs, "encoder_hidden_states").filter(|s| s.rank() == 3 && is_float(s.elem));
        let (Some(sample), Some(timestep), Some(context)) = (sample, timestep, context) else {
            return Err(mismatch(file, "UNet", expected, &inputs));
        };
        let outputs = tensor::outputs(&session);
        let output = outputs
            .iter()
            .find(|o| o.name == "out_sample")
            .or_else(|| outputs.first())
            .cloned()
            .ok_or_else(|| eyre!("{} has no outputs", file.display()))?;
        let residuals = ordered_residuals(&inputs, DOWN_IN, MID_IN)
            .map_err(|e| eyre!("{}: ControlNet residual inputs: {e}", file.display()))?
            .unwrap_or_default();
        let zeros = residuals
            .iter()
            .map(|r| {
                let shape: Vec<usize> = r.shape.iter().map(|&d| d.max(1) as usize).collect();
                let shape = [1, shape[1], 1, 1];
                tensor::float_input(ndarray::ArrayD::zeros(shape.to_vec()).view(), r.elem)
            })
            .collect::<eyre::Result<Vec<_>>>()?;
        Ok(Self {
            sample: sample.clone(),
            timestep: timestep.clone(),
            context: context.clone(),
            session,
            output: output.name,
            output_elem: output.elem,
            file: file.to_path_buf(),
            ort: Duration::ZERO,
            bound: None,
            bound_calls: 0,
            bytes: 0,
            memory: rt.memory_context(),
            vae_scale: DEFAULT_VAE_SCALE,
            residuals,
            zeros,
        })
    }

    /// How many ControlNet residuals the graph takes (0: it was exported without ControlNet).
    pub fn residual_count(&self) -> usize {
        self.residuals.len()
    }

    /// Its ControlNet residual inputs, in order.
    pub(crate) fn residual_specs(&self) -> &[IoSpec] {
        &self.residuals
    }

    /// The residual inputs with their values: `residuals` when given, else the zeros.
    fn residual_feeds<'a>(
        &'a self,
        residuals: Option<&'a Residuals>,
    ) -> impl Iterator<Item = (&'a str, &'a DynValue)> {
        let values = residuals.map_or(&self.zeros, |r| &r.values);
        self.residuals
            .iter()
            .map(|s| s.name.as_str())
            .zip(values.iter())
    }

    /// Binds a run: `context` `[batch, 77, D]` once for every step, the output into a kept
    /// buffer of `sample_shape` (`[batch, 4, h, w]`). Until [`Unet::unbind`], calls with this
    /// context go through the binding. With CUDA graphs (`[runtime.cuda] cuda_graphs`) the sample,
    /// timestep and output also live on the device at fixed addresses, except in a `controlled`
    /// run, whose residuals come from the ControlNet at new addresses every step; a run without
    /// control binds the zero residuals once.
    pub(crate) fn bind_run(
        &mut self,
        rt: &Runtime,
        context: ArrayView3<f32>,
        sample_shape: [usize; 4],
        controlled: bool,
    ) -> eyre::Result<()> {
        use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
        use ort::value::DynTensor;
        let (memory, file) = (self.memory, self.file.clone());
        let doing = self.doing(&sample_shape);
        let e = |what: &'static str| {
            let (file, doing) = (file.clone(), doing.clone());
            move |err: ort::Error| {
                run_error(memory, &format!("{doing}: binding the {what}"), &file, err)
            }
        };
        self.bound = None;
        let mut binding = self.session.create_binding().map_err(e("UNet"))?;
        let ctx = tensor::float_input(context.into_dyn(), self.context.elem)?;
        let gpu = rt.provider.is_gpu();
        let device_id = rt.options.cuda.device_id;
        if gpu {
            let ctx = ctx
                .downcast::<ort::value::DynTensorValueType>()
                .map_err(e("context"))?
                .to(AllocationDevice::CUDA, device_id)
                .map_err(e("context (upload)"))?;
            binding
                .bind_input(self.context.name.as_str(), &ctx)
                .map_err(e("context"))?;
        } else {
            binding
                .bind_input(self.context.name.as_str(), &ctx)
                .map_err(e("context"))?;
        }
        let host = Allocator::default();
        let out_shape = sample_shape.to_vec();
        if !controlled {
            for (name, value) in self.residual_feeds(None) {
                binding
                    .bind_input(name, value)
                    .map_err(e("zero residuals"))?;
            }
        }
        let device = if gpu && rt.options.cuda.cuda_graphs && !controlled {
            let cuda = Allocator::new(
                &self.session,
                MemoryInfo::new(
                    AllocationDevice::CUDA,
                    device_id,
                    AllocatorType::Device,
                    MemoryType::Default,
                )
                .map_err(e("device memory"))?,
            )
            .map_err(e("device allocator"))?;
            let ts_shape = self.timestep_shape(sample_shape[0]);
            let mut bufs = DeviceBuffers {
                sample: DynTensor::new(&cuda, self.sample.elem, out_shape.clone())
                    .map_err(e("sample"))?,
                timestep: DynTensor::new(&cuda, self.timestep.elem, ts_shape)
                    .map_err(e("timestep"))?,
                output: DynTensor::new(&cuda, self.output_elem, out_shape.clone())
                    .map_err(e("output"))?,
                host_output: DynTensor::new(&host, self.output_elem, out_shape.clone())
                    .map_err(e("output"))?,
            };
            binding
                .bind_input(self.sample.name.as_str(), &bufs.sample)
                .map_err(e("sample"))?;
            binding
                .bind_input(self.timestep.name.as_str(), &bufs.timestep)
                .map_err(e("timestep"))?;
            binding
                .bind_output(self.output.as_str(), bufs.output.view_mut())
                .map_err(e("output"))?;
            Some(bufs)
        } else {
            let out = DynTensor::new(&host, self.output_elem, out_shape).map_err(e("output"))?;
            binding
                .bind_output(self.output.as_str(), out)
                .map_err(e("output"))?;
            None
        };
        self.bound = Some(RunBinding {
            binding,
            context_shape: context.shape().to_vec(),
            device,
            doing,
        });
        Ok(())
    }

    /// Ends the run's binding (frees its buffers).
    pub(crate) fn unbind(&mut self) {
        self.bound = None;
    }

    /// The timestep input's shape for a batch: 0-d, fixed, or one per batch row.
    fn timestep_shape(&self, batch: usize) -> Vec<usize> {
        match self.timestep.shape.first() {
            None => vec![],
            Some(&d) if d > 0 => vec![d as usize],
            Some(_) => vec![batch],
        }
    }

    /// `running the UNet unet_lcm at 512×512 (batch 2)` for a sample of `shape` `[b, c, h, w]`.
    pub(super) fn doing(&self, shape: &[usize]) -> String {
        let (h, w) = (shape.get(2).copied(), shape.get(3).copied());
        let size = match (h, w) {
            (Some(h), Some(w)) => format!(" at {}×{}", w * self.vae_scale, h * self.vae_scale),
            _ => String::new(),
        };
        format!(
            "running the UNet {}{size} (batch {})",
            component_name(&self.file),
            shape.first().copied().unwrap_or(1)
        )
    }

    /// Width of the text embeddings this UNet attends to, when the graph fixes it.
    pub fn context_dim(&self) -> Option<usize> {
        self.context
            .shape
            .get(2)
            .and_then(|d| usize::try_from(*d).ok())
    }

    /// `fp16` or `fp32`: the type the graph takes its sample in.
    pub(crate) fn io_precision(&self) -> &'static str {
        precision_name(self.sample.elem)
    }

    /// ε prediction `[batch, 4, h, w]` for `sample` at timestep `t` with text context `[batch, 77, D]`.
    /// `t` goes in as the graph's dtype: float as is, integer truncated (a cast, as torch does).
    pub fn predict(
        &mut self,
        sample: ArrayView4<f32>,
        t: f32,
        context: ArrayView3<f32>,
    ) -> eyre::Result<Array4<f32>> {
        self.predict_with(sample, t, context, None)
    }

    /// [`Unet::predict`] under `options`: `options.terminate()` from another thread ends the
    /// call early with an error.
    pub fn predict_with(
        &mut self,
        sample: ArrayView4<f32>,
        t: f32,
        context: ArrayView3<f32>,
        options: Option<&RunOptions>,
    ) -> eyre::Result<Array4<f32>> {
        self.predict_controlled(sample, t, context, None, options)
    }

    /// [`Unet::predict_with`] with a ControlNet's `residuals` added to its down and mid blocks
    /// (`None`: zeros, where the graph takes residuals).
    pub fn predict_controlled(
        &mut self,
        sample: ArrayView4<f32>,
        t: f32,
        context: ArrayView3<f32>,
        residuals: Option<&Residuals>,
        options: Option<&RunOptions>,
    ) -> eyre::Result<Array4<f32>> {
        if let Some(r) = residuals
            && r.values.len() != self.residuals.len()
        {
            return Err(eyre!(
                "{}: {} ControlNet residuals given, the graph takes {}",
                self.file.display(),
                r.values.len(),
                self.residuals.len()
            ));
        }
        let batch = sample.shape()[0];
        let doing = self.doing(sample.shape());
        let shape = self.timestep_shape(batch);
        let x = tensor::float_input(sample.into_dyn(), self.sample.elem)?;
        let ts = tensor::timestep_input(t, &shape, self.timestep.elem)
            .wrap_err_with(|| format!("{}: timestep input", self.file.display()))?;
        if self
            .bound
            .as_ref()
            .is_some_and(|b| b.context_shape == context.shape())
        {
            return self.predict_bound(x, ts, residuals, options);
        }
        let ctx = tensor::float_input(context.into_dyn(), self.context.elem)?;
        let mut inputs = ort::inputs![
            self.sample.name.as_str() => x,
            self.timestep.name.as_str() => ts,
            self.context.name.as_str() => ctx,
        ];
        let values = residuals.map_or(&self.zeros, |r| &r.values);
        inputs.extend(
            self.residuals
                .iter()
                .zip(values)
                .map(|(spec, value)| (spec.name.as_str().into(), value.into())),
        );
        let start = Instant::now();
        let outputs = match options {
            Some(o) => self.session.run_with_options(inputs, o),
            None => self.session.run(inputs),
        }
        .map_err(|e| run_error(self.memory, &doing, &self.file, e))?;
        self.ort += start.elapsed();
        let out = tensor::float_output(&outputs[self.output.as_str()])?;
        Ok(out.into_dimensionality::<Ix4>()?)
    }
}

impl Unet {
    /// A step through the run's binding: only the sample and timestep go in.
    fn predict_bound(
        &mut self,
        x: DynValue,
        ts: DynValue,
        residuals: Option<&Residuals>,
        options: Option<&RunOptions>,
    ) -> eyre::Result<Array4<f32>> {
        use ort::value::DynTensorValueType;
        let (memory, file) = (self.memory, self.file.clone());
        let bound = self
            .bound
            .as_mut()
            .expect("predict_bound runs with a binding");
        let doing = bound.doing.clone();
        let e = |what: &'static str| {
            let (file, doing) = (file.clone(), doing.clone());
            move |err: ort::Error| run_error(memory, &format!("{doing}: {what}"), &file, err)
        };
        match &mut bound.device {
            Some(dev) => {
                x.downcast::<DynTensorValueType>()
                    .map_err(e("sample"))?
                    .copy_into(dev.sample.view_mut())
                    .map_err(e("copying the sample to the GPU"))?;
                ts.downcast::<DynTensorValueType>()
                    .map_err(e("timestep"))?
                    .copy_into(dev.timestep.view_mut())
                    .map_err(e("copying the timestep to the GPU"))?;
            }
            None => {
                bound
                    .binding
                    .bind_input(self.sample.name.as_str(), &x)
                    .map_err(e("binding the sample"))?;
                bound
                    .binding
                    .bind_input(self.timestep.name.as_str(), &ts)
                    .map_err(e("binding the timestep"))?;
            }
        }
        if let Some(r) = residuals {
            if bound.device.is_some() {
                return Err(eyre!(
                    "{doing}: ControlNet residuals given to a run bound for CUDA graphs without them"
                ));
            }
            for (spec, value) in self.residuals.iter().zip(&r.values) {
                bound
                    .binding
                    .bind_input(spec.name.as_str(), value)
                    .map_err(e("binding a ControlNet residual"))?;
            }
        }
        let start = Instant::now();
        let outputs = match options {
            Some(o) => self.session.run_binding_with_options(&bound.binding, o),
            None => self.session.run_binding(&bound.binding),
        }
        .map_err(|err| run_error(memory, &doing, &file, err))?;
        let out = match &mut bound.device {
            Some(dev) => {
                drop(outputs);
                dev.output
                    .copy_into(dev.host_output.view_mut())
                    .map_err(e("copying the output from the GPU"))?;
                tensor::float_output(&dev.host_output)?
            }
            None => tensor::float_output(&outputs[self.output.as_str()])?,
        };
        self.ort += start.elapsed();
        self.bound_calls += 1;
        Ok(out.into_dimensionality::<Ix4>()?)
    }
}
