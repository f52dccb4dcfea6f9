//! Where each LoRA target's weight is in an exported graph. Exports name nodes by module path
//! (`/unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul`; optimum-cli's
//! have no `/unet` wrapper) while many weights are anonymous (`onnx::MatMul_1234`), so a
//! module is found through the node that consumes its weight: a MatMul (weight stored `[in,
//! out]`), a Gemm (`[out, in]` with `transB`, else `[in, out]`) or a Conv (`[out, in, kh, kw]`).
//! Initializers named by parameter path (`unet.conv_in.weight`) are found by name too.

use std::collections::{BTreeMap, HashMap};

use super::file::ModuleName;
use super::onnx::{Graph, Initializer};

/// How a target's weight is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `[in, out]`: torch's `Wᵀ` (MatMul, Gemm without transB).
    InOut,
    /// `[out, in]` (Gemm with transB).
    OutIn,
    /// `[out, in, kh, kw]`.
    Conv,
}

/// One weight a LoRA may change.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Index into the graph's initializers.
    pub(crate) init: usize,
    pub(crate) layout: Layout,
}

impl Target {
    /// `(out, in, kh·kw)` of the weight in torch's terms.
    pub(crate) fn torch_shape(&self, init: &Initializer) -> (usize, usize, usize) {
        let d = &init.dims;
        match self.layout {
            Layout::InOut => (d[1], d[0], 1),
            Layout::OutIn => (d[0], d[1], 1),
            Layout::Conv => (d[0], d[1], d[2..].iter().product()),
        }
    }

    /// The weight's shape in torch's terms, for messages (`[320, 320]`, `[320, 320, 3, 3]`).
    pub(crate) fn torch_dims(&self, init: &Initializer) -> Vec<usize> {
        let d = &init.dims;
        match self.layout {
            Layout::InOut => vec![d[1], d[0]],
            Layout::OutIn | Layout::Conv => d.clone(),
        }
    }
}

/// Wrapper modules exports put around the model (`/unet/…`, `/text_encoder/…`, CLIP's
/// `text_model`): dropped from both sides before module paths are compared.
const WRAPPERS: [&str; 5] = ["unet", "text_encoder", "text_model", "model", "base_model"];

fn strip_wrappers(mut path: &str) -> &str {
    loop {
        match path.split_once('.') {
            Some((head, tail)) if WRAPPERS.contains(&head) => path = tail,
            _ => return path,
        }
    }
}

/// The targets of one graph, by module path (wrappers stripped), and kohya's flat spelling.
pub(crate) struct Targets {
    by_path: BTreeMap<String, Target>,
    by_flat: HashMap<String, String>,
    /// Operators that fuse what LoRA targets (`Attention`, `MultiHeadAttention`): a graph
    /// optimised for a provider, whose per-module weights are gone.
    pub(crate) fused_ops: Vec<String>,
}

const FUSED: [&str; 5] = [
    "Attention",
    "MultiHeadAttention",
    "PackedAttention",
    "GroupQueryAttention",
    "BiasSplitGelu",
];

impl Targets {
    pub(crate) fn find(graph: &Graph) -> Self {
        let index: HashMap<&str, usize> = graph
            .initializers
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let mut by_path = BTreeMap::new();
        let mut fused_ops = Vec::new();
        for node in &graph.nodes {
            if FUSED.contains(&node.op_type.as_str()) && !fused_ops.contains(&node.op_type) {
                fused_ops.push(node.op_type.clone());
            }
            let Some(weight) = node.input.get(1) else {
                continue;
            };
            let Some(&init) = index.get(weight.as_str()) else {
                continue;
            };
            let rank = graph.initializers[init].dims.len();
            let layout = match node.op_type.as_str() {
                "MatMul" if rank == 2 => Layout::InOut,
                "Gemm" if rank == 2 && node.int_attr("transB") == Some(1) => Layout::OutIn,
                "Gemm" if rank == 2 => Layout::InOut,
                "Conv" if rank >= 3 => Layout::Conv,
                _ => continue,
            };
            let target = Target { init, layout };
            // By the node's name: `/unet/down_blocks.0/…/to_q/MatMul` → its module path.
            if let Some((module, _op)) = node.name.trim_start_matches('/').rsplit_once('/') {
                // A variant exported with peft layers fused names them `…/to_q/base_layer/MatMul`.
                let module = module.strip_suffix("/base_layer").unwrap_or(module);
                let path = module.replace('/', ".");
                by_path
                    .entry(strip_wrappers(&path).to_string())
                    .or_insert(target.clone());
            }
            // By the weight's own name: `unet.conv_in.weight`.
            if let Some(path) = weight.strip_suffix(".weight") {
                by_path
                    .entry(strip_wrappers(path).to_string())
                    .or_insert(target);
            }
        }
        let by_flat = by_path
            .keys()
            .map(|p| (p.replace('.', "_"), p.clone()))
            .collect();
        Targets {
            by_path,
            by_flat,
            fused_ops,
        }
    }

    /// The target of a LoRA module, and its path as the graph has it.
    pub(crate) fn get(&self, module: &ModuleName) -> Option<(&str, &Target)> {
        let path = match module {
            ModuleName::Dotted(p) => strip_wrappers(p).to_string(),
            ModuleName::Flat(f) => {
                // kohya spells wrappers flat too (`text_model_encoder_…`).
                let f = f.strip_prefix("text_model_").unwrap_or(f);
                self.by_flat.get(f)?.clone()
            }
        };
        self.by_path
            .get_key_value(&path)
            .map(|(k, t)| (k.as_str(), t))
    }

    pub(crate) fn len(&self) -> usize {
        self.by_path.len()
    }
}
