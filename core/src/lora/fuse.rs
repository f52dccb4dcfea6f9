//! The fusion itself: for every weight a set of adapters targets, `W' = W + Σᵢ wᵢ · sᵢ · Bᵢ·Aᵢ`
//! (sᵢ = αᵢ/rᵢ) computed in f32 in the graph's own layout (`[in, out]` weights take
//! `Aᵀ·Bᵀ`), cast back to the graph's element type, as ONNX Runtime values to override the
//! graph's initializers. One weight is widened to f32 at a time, so the extra memory is the
//! overriding copies plus one f32 weight.

use std::collections::BTreeMap;
use std::path::Path;

use eyre::eyre;
use ndarray::{ArrayView2, ArrayViewMut2, linalg::general_mat_mul};
use ort::value::{DynValue, Tensor};

use super::file::{Component, Layer, LoraFile};
use super::graph::{Layout, Target, Targets};
use super::onnx::{Elem, Graph};
use crate::error::Fixable;
use crate::runtime::WeightOverrides;

/// A weight to change: where it is, and the updates (layer, weight) to add in order.
type Planned<'a> = (Target, Vec<(&'a Layer, f32)>);

/// The fused weights, by initializer name.
pub(crate) type Overrides = WeightOverrides;

/// The overriding initializers of `graph_file` (a `component` graph) for `adapters`
/// (file, weight), or an error naming the module a file targets that the graph lacks or whose
/// shape differs. Adapters without layers for `component` change nothing.
pub(crate) fn overrides(
    graph_file: &Path,
    component: Component,
    adapters: &[(&LoraFile, f32)],
    family: &str,
) -> eyre::Result<Overrides> {
    let graph = Graph::read(graph_file)?;
    let targets = Targets::find(&graph);
    // Per initializer, the updates to add, in the order given.
    let mut plan: BTreeMap<usize, Planned> = BTreeMap::new();
    for (file, weight) in adapters {
        for layer in file.layers.iter().filter(|l| l.component == component) {
            let (path, target) = targets
                .get(&layer.module)
                .ok_or_else(|| missing_module(graph_file, file, layer, &targets))?;
            check_shape(graph_file, file, layer, (path, target), &graph, family)?;
            plan.entry(target.init)
                .or_insert_with(|| (target.clone(), Vec::new()))
                .1
                .push((layer, *weight));
        }
    }
    let mut out = WeightOverrides::default();
    for (init, (target, updates)) in plan {
        let t = &graph.initializers[init];
        let elem = t.elem.map_err(|code| {
            eyre!(Fixable::new(
                format!(
                    "{}: the weight {} has ONNX element type {code}; run-time LoRA fuses into float32 and float16 weights",
                    graph_file.display(),
                    t.name
                ),
                "use an fp32 or fp16 export (not a quantized one)",
            ))
        })?;
        let mut w = t.read_f32()?;
        let (rows, cols) = match target.layout {
            Layout::InOut => (t.dims[0], t.dims[1]),
            Layout::OutIn => (t.dims[0], t.dims[1]),
            Layout::Conv => (t.dims[0], t.len() / t.dims[0]),
        };
        for (layer, weight) in updates {
            add_update(
                &mut w,
                rows,
                cols,
                target.layout,
                layer,
                weight * layer.scale,
            );
        }
        out.0.push((t.name.clone(), value(&t.dims, elem, w)?));
    }
    Ok(out)
}

/// `w += c · B·A` in `layout` (`w` is `rows × cols` as stored).
fn add_update(w: &mut [f32], rows: usize, cols: usize, layout: Layout, layer: &Layer, c: f32) {
    let r = layer.rank();
    let out = layer.up_shape[0];
    let fan_in = layer.down.len() / r;
    let b = ArrayView2::from_shape((out, r), &layer.up).expect("checked shape");
    let a = ArrayView2::from_shape((r, fan_in), &layer.down).expect("checked shape");
    let mut w = ArrayViewMut2::from_shape((rows, cols), w).expect("initializer shape");
    match layout {
        Layout::InOut => general_mat_mul(c, &a.t(), &b.t(), 1.0, &mut w),
        Layout::OutIn | Layout::Conv => general_mat_mul(c, &b, &a, 1.0, &mut w),
    }
}

fn value(dims: &[usize], elem: Elem, w: Vec<f32>) -> eyre::Result<DynValue> {
    let shape: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    Ok(match elem {
        Elem::F32 => Tensor::from_array((shape, w))?.into_dyn(),
        Elem::F16 => {
            let h: Vec<half::f16> = w.into_iter().map(half::f16::from_f32).collect();
            Tensor::from_array((shape, h))?.into_dyn()
        }
    })
}

fn missing_module(
    graph_file: &Path,
    file: &LoraFile,
    layer: &Layer,
    targets: &Targets,
) -> eyre::Report {
    let module = layer.module.shown();
    if !targets.fused_ops.is_empty() {
        return Fixable::new(
            format!(
                "LoRA file {}: module {module} is not in {} — the graph fuses it into {} (an `--optimize` export), which run-time LoRA cannot map",
                file.path.display(),
                graph_file.display(),
                targets.fused_ops.join(", ")
            ),
            "run-time LoRA needs the unfused export: export the model without --optimize (or use a pre-fused variant)",
        )
        .into();
    }
    Fixable::new(
        format!(
            "LoRA file {}: its {} module {module} is not in {} ({} LoRA-targetable weights found there)",
            file.path.display(),
            layer.component.name(),
            graph_file.display(),
            targets.len()
        ),
        "use a LoRA trained for this model (Stable Diffusion v1.5); a LoRA for SDXL or SD 2.x has other modules",
    )
    .into()
}

/// `layer` against its target weight in `graph`; a mismatch names both shapes and `family`, the
/// model's family in words (the caller's: `SD v1.5`, `SD-Turbo (SD 2.1's architecture)`).
fn check_shape(
    graph_file: &Path,
    file: &LoraFile,
    layer: &Layer,
    (path, target): (&str, &Target),
    graph: &Graph,
    family: &str,
) -> eyre::Result<()> {
    let init = &graph.initializers[target.init];
    let (out, fan_in, kernel) = target.torch_shape(init);
    let r = layer.rank();
    let lora_out = layer.up_shape[0];
    let lora_in = layer.down_shape[1];
    let lora_kernel: usize = layer.down_shape[2..].iter().product();
    let up_is_1x1 = layer.up_shape[2..].iter().all(|&d| d == 1);
    if lora_out == out && lora_in == fan_in && lora_kernel == kernel && up_is_1x1 {
        return Ok(());
    }
    let mut lora_dims = vec![lora_out, lora_in];
    lora_dims.extend_from_slice(&layer.down_shape[2..]);
    let reads = if path.contains("attn2.to_k") || path.contains("attn2.to_v") {
        text_width_family(lora_in)
            .map(|f| {
                format!(
                    "; a LoRA whose cross-attention reads {lora_in}-wide text was trained for {f}"
                )
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    Err(Fixable::new(
        format!(
            "LoRA file {}: module {path} updates a {lora_dims:?} weight (rank {r}), but {} has it as {:?}: this model is {family}{reads}",
            file.path.display(),
            graph_file.display(),
            target.torch_dims(init)
        ),
        format!(
            "use a LoRA trained for {family}; LoRAs for SD 1.5, SD 2.x (SD-Turbo is SD 2.1's architecture) and SDXL have other shapes and do not transfer"
        ),
    )
    .into())
}

/// The family a cross-attention key/value input width belongs to at full size (CLIP ViT-L: 768,
/// OpenCLIP ViT-H: 1024, SDXL's two encoders: 2048).
fn text_width_family(width: usize) -> Option<&'static str> {
    match width {
        768 => Some("SD 1.x"),
        1024 => Some("SD 2.x or SD-Turbo"),
        2048 => Some("SDXL"),
        _ => None,
    }
}
