//! LoRA `.safetensors` files as the two layouts SD v1.5 adapters ship in: diffusers/peft
//! (`unet.<module>.lora_A.weight` / `.lora_B.weight`, older `.lora.down/.lora.up`; scale from
//! the file's `lora_adapter_metadata` or per-module `.alpha`) and kohya
//! (`lora_unet_<module with _>.lora_down.weight` / `.lora_up.weight` + `.alpha`), each layer
//! read into f32 with its rank and scale α/r. Other adapter kinds (LoHa, LoKr, DoRA, OFT, full
//! diffs) are refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::Fixable;

/// Which model part a layer changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Component {
    Unet,
    TextEncoder,
}

impl Component {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::TextEncoder => "text_encoder",
        }
    }
}

/// How a layer names its module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ModuleName {
    /// A dotted module path (`down_blocks.0.attentions.0.proj_in`).
    Dotted(String),
    /// kohya's path with every `.` turned into `_` (`down_blocks_0_attentions_0_proj_in`).
    Flat(String),
}

impl ModuleName {
    /// As the file spells it, for messages.
    pub(crate) fn shown(&self) -> &str {
        match self {
            ModuleName::Dotted(s) | ModuleName::Flat(s) => s,
        }
    }
}

/// One low-rank update `scale · up · down`.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) component: Component,
    pub(crate) module: ModuleName,
    /// `A` / `lora_down`: `[r, in]` or `[r, in, kh, kw]`.
    pub(crate) down: Vec<f32>,
    pub(crate) down_shape: Vec<usize>,
    /// `B` / `lora_up`: `[out, r]` or `[out, r, 1, 1]`.
    pub(crate) up: Vec<f32>,
    pub(crate) up_shape: Vec<usize>,
    /// α / r (peft: `lora_alpha / r`, or `/ √r` with rsLoRA).
    pub(crate) scale: f32,
}

impl Layer {
    pub(crate) fn rank(&self) -> usize {
        self.down_shape[0]
    }
}

/// A LoRA file, read.
#[derive(Debug, Clone)]
pub(crate) struct LoraFile {
    pub(crate) path: PathBuf,
    pub(crate) sha256: String,
    /// `diffusers` or `kohya`.
    pub(crate) format: &'static str,
    pub(crate) layers: Vec<Layer>,
}

impl LoraFile {
    /// The components its layers change, in order (`unet`, `text_encoder`).
    pub(crate) fn components(&self) -> Vec<Component> {
        let mut c: Vec<Component> = self.layers.iter().map(|l| l.component).collect();
        c.sort();
        c.dedup();
        c
    }
}

fn bad(path: &Path, cause: impl std::fmt::Display, fix: impl Into<String>) -> eyre::Report {
    Fixable::new(format!("LoRA file {}: {cause}", path.display()), fix).into()
}

/// Key suffixes of adapter kinds that are not LoRA, and their names.
const NOT_LORA: [(&str, &str); 8] = [
    ("hada_w1_a", "LoHa (LyCORIS)"),
    ("lokr_w1", "LoKr (LyCORIS)"),
    ("lora_magnitude_vector", "DoRA"),
    ("dora_scale", "DoRA"),
    ("oft_blocks", "OFT"),
    ("oft_r", "OFT"),
    (".diff", "a full weight difference (LyCORIS full)"),
    ("ia3_l", "IA³"),
];

/// Reads and checks `path`.
pub(crate) fn read(path: &Path) -> eyre::Result<LoraFile> {
    let bytes = std::fs::read(path).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::NotFound {
            "check the path, or name an adapter of the model folder (`speedscape models` lists them)"
        } else {
            "check the file's permissions"
        };
        bad(path, format!("cannot be read: {e}"), fix)
    })?;
    let sha256 = {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(&bytes);
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| {
        bad(
            path,
            format!("is not a safetensors file ({e})"),
            "LoRAs must be .safetensors files (convert a .ckpt/.pt with `safetensors`' convert script)",
        )
    })?;
    let metadata = SafeTensors::read_metadata(&bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().clone())
        .unwrap_or_default();
    let names: Vec<String> = tensors.names().into_iter().map(str::to_string).collect();
    refuse_other_kinds(path, &names)?;
    let keys = classify(path, &names)?;
    let format = if keys.values().any(|k| k.kohya) {
        "kohya"
    } else {
        "diffusers"
    };
    let meta = PeftMeta::parse(metadata.get("lora_adapter_metadata"));
    let mut layers = Vec::new();
    for ((component, module), k) in &keys {
        layers.push(layer(path, &tensors, *component, module, k, &meta)?);
    }
    Ok(LoraFile {
        path: path.to_path_buf(),
        sha256,
        format,
        layers,
    })
}

fn refuse_other_kinds(path: &Path, names: &[String]) -> eyre::Result<()> {
    for (marker, kind) in NOT_LORA {
        if let Some(key) = names.iter().find(|n| n.contains(marker)) {
            return Err(bad(
                path,
                format!("is a {kind} adapter (key {key}), not a LoRA"),
                "speedscape fuses LoRA (and LoCon) adapters only; use a LoRA version of it",
            ));
        }
    }
    if names
        .iter()
        .any(|n| n.starts_with("lora_te1_") || n.starts_with("lora_te2_"))
    {
        return Err(bad(
            path,
            "is an SDXL LoRA (keys lora_te1_/lora_te2_ for its two text encoders)",
            "use a LoRA trained for Stable Diffusion v1.5",
        ));
    }
    Ok(())
}

/// The tensors of one module's update.
#[derive(Debug, Default)]
struct Keys {
    down: Option<String>,
    up: Option<String>,
    alpha: Option<String>,
    kohya: bool,
}

/// Groups `names` by (component, module), or refuses a file with no LoRA tensors or a key it
/// cannot place.
fn classify(
    path: &Path,
    names: &[String],
) -> eyre::Result<BTreeMap<(Component, ModuleName), Keys>> {
    let mut keys: BTreeMap<(Component, ModuleName), Keys> = BTreeMap::new();
    let mut unplaced = Vec::new();
    for name in names {
        match split_key(name) {
            Some((component, module, role, kohya)) => {
                let k = keys.entry((component, module)).or_default();
                k.kohya |= kohya;
                let slot = match role {
                    Role::Down => &mut k.down,
                    Role::Up => &mut k.up,
                    Role::Alpha => &mut k.alpha,
                };
                *slot = Some(name.clone());
            }
            None => unplaced.push(name.as_str()),
        }
    }
    if keys.is_empty() {
        let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
        return Err(bad(
            path,
            format!(
                "holds no LoRA tensors in a layout speedscape reads (keys like {})",
                if shown.is_empty() {
                    "none".into()
                } else {
                    shown.join(", ")
                }
            ),
            "use a LoRA in the diffusers/peft layout (unet.….lora_A.weight) or kohya's (lora_unet_….lora_down.weight)",
        ));
    }
    if let Some(key) = unplaced.first() {
        return Err(bad(
            path,
            format!(
                "has a tensor speedscape cannot place: {key} ({} such)",
                unplaced.len()
            ),
            "use a LoRA in the diffusers/peft layout (unet.….lora_A.weight) or kohya's (lora_unet_….lora_down.weight)",
        ));
    }
    for ((_, module), k) in &keys {
        if k.down.is_none() || k.up.is_none() {
            return Err(bad(
                path,
                format!(
                    "module {} has only half of its update (down/A and up/B both needed)",
                    module.shown()
                ),
                "the file is incomplete or damaged; download it again",
            ));
        }
    }
    Ok(keys)
}

enum Role {
    Down,
    Up,
    Alpha,
}

/// `(component, module, role, kohya?)` of a tensor name, or `None`.
fn split_key(name: &str) -> Option<(Component, ModuleName, Role, bool)> {
    // kohya: lora_unet_<flat>.lora_down.weight / .lora_up.weight / .alpha
    for (prefix, component) in [
        ("lora_unet_", Component::Unet),
        ("lora_te_", Component::TextEncoder),
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let (module, role) = role_of(rest)?;
            return Some((component, ModuleName::Flat(module.to_string()), role, true));
        }
    }
    let (component, rest) = if let Some(r) = name.strip_prefix("unet.") {
        (Component::Unet, r)
    } else if let Some(r) = name.strip_prefix("text_encoder.") {
        (Component::TextEncoder, r)
    } else if let Some(r) = name.strip_prefix("base_model.model.") {
        (Component::Unet, r)
    } else {
        return None;
    };
    // diffusers' attention-processor era: `attn1.processor.to_q_lora.down.weight` is
    // `attn1.to_q.lora.down.weight` (and `to_out_lora` is `to_out.0`).
    let normalized;
    let rest = if rest.contains(".processor.") {
        normalized = rest
            .replace(".processor.", ".")
            .replace("to_out_lora.", "to_out.0.lora.")
            .replace("_lora.", ".lora.");
        normalized.as_str()
    } else {
        rest
    };
    let (module, role) = role_of(rest)?;
    let module = module.to_string();
    Some((component, ModuleName::Dotted(module), role, false))
}

fn role_of(rest: &str) -> Option<(&str, Role)> {
    const ROLES: [(&str, bool); 7] = [
        (".lora_A.weight", true),
        (".lora_B.weight", false),
        (".lora_down.weight", true),
        (".lora_up.weight", false),
        (".lora.down.weight", true),
        (".lora.up.weight", false),
        (".alpha", true),
    ];
    for (suffix, down) in ROLES {
        if let Some(module) = rest.strip_suffix(suffix) {
            let role = match (suffix, down) {
                (".alpha", _) => Role::Alpha,
                (_, true) => Role::Down,
                _ => Role::Up,
            };
            return Some((module, role));
        }
    }
    None
}

/// diffusers' `lora_adapter_metadata`: peft's LoraConfig per component (`unet.lora_alpha`,
/// `unet.r`, `unet.alpha_pattern`, `unet.rank_pattern`, `unet.use_rslora`).
#[derive(Debug, Default)]
struct PeftMeta(serde_json::Map<String, serde_json::Value>);

impl PeftMeta {
    fn parse(text: Option<&String>) -> Self {
        let map = text
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        PeftMeta(map)
    }

    fn get(&self, component: Component, key: &str) -> Option<&serde_json::Value> {
        self.0.get(&format!("{}.{key}", component.name()))
    }

    /// α for `module` of `component`: an `alpha_pattern` entry matching the module's tail, else
    /// `lora_alpha`; `None` without metadata.
    fn alpha(&self, component: Component, module: &str) -> Option<f32> {
        if let Some(p) = self
            .get(component, "alpha_pattern")
            .and_then(|v| v.as_object())
        {
            for (pattern, v) in p {
                if module == pattern || module.ends_with(&format!(".{pattern}")) {
                    return v.as_f64().map(|a| a as f32);
                }
            }
        }
        self.get(component, "lora_alpha")
            .and_then(|v| v.as_f64())
            .map(|a| a as f32)
    }

    fn rslora(&self, component: Component) -> bool {
        self.get(component, "use_rslora")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }
}

fn layer(
    path: &Path,
    tensors: &SafeTensors,
    component: Component,
    module: &ModuleName,
    k: &Keys,
    meta: &PeftMeta,
) -> eyre::Result<Layer> {
    let (down, down_shape) = tensor_f32(path, tensors, k.down.as_deref().expect("checked"))?;
    let (up, up_shape) = tensor_f32(path, tensors, k.up.as_deref().expect("checked"))?;
    let rank = down_shape.first().copied().unwrap_or(0);
    if !(2..=4).contains(&down_shape.len())
        || up_shape.len() != down_shape.len()
        || up_shape.get(1) != Some(&rank)
        || rank == 0
    {
        return Err(bad(
            path,
            format!(
                "module {}: down/A {down_shape:?} and up/B {up_shape:?} are not the two halves of a rank-r update",
                module.shown()
            ),
            "the file is damaged or not a LoRA; download it again",
        ));
    }
    let alpha = match &k.alpha {
        Some(key) => Some(
            tensor_f32(path, tensors, key)?
                .0
                .first()
                .copied()
                .unwrap_or(rank as f32),
        ),
        None => meta.alpha(component, module.shown()),
    };
    let r = rank as f32;
    let scale = match alpha {
        Some(a) if meta.rslora(component) => a / r.sqrt(),
        Some(a) => a / r,
        None => 1.0,
    };
    Ok(Layer {
        component,
        module: module.clone(),
        down,
        down_shape,
        up,
        up_shape,
        scale,
    })
}

fn tensor_f32(
    path: &Path,
    tensors: &SafeTensors,
    name: &str,
) -> eyre::Result<(Vec<f32>, Vec<usize>)> {
    let t = tensors.tensor(name).map_err(|e| {
        bad(
            path,
            format!("tensor {name}: {e}"),
            "download the file again",
        )
    })?;
    let data = t.data();
    let values: Vec<f32> = match t.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(bad(
                path,
                format!(
                    "tensor {name} is {other:?}; LoRA weights are float32, float16 or bfloat16"
                ),
                "use an unquantized LoRA file",
            ));
        }
    };
    Ok((values, t.shape().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_both_layouts_name_their_module_and_role() {
        let (c, m, _, kohya) =
            split_key("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight").unwrap();
        assert_eq!(
            (c, m, kohya),
            (
                Component::Unet,
                ModuleName::Flat("down_blocks_0_attentions_0_proj_in".into()),
                true
            )
        );
        let (c, m, _, _) =
            split_key("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight")
                .unwrap();
        assert_eq!(
            (c, m),
            (
                Component::TextEncoder,
                ModuleName::Dotted("text_model.encoder.layers.0.self_attn.q_proj".into())
            )
        );
        let (_, m, _, _) = split_key(
            "unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight",
        )
        .unwrap();
        assert_eq!(
            m.shown(),
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0"
        );
        let (_, m, _, _) = split_key("unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.down.weight").unwrap();
        assert_eq!(
            m.shown(),
            "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
        );
        assert!(split_key("model.diffusion_model.input_blocks.1.weight").is_none());
    }

    #[test]
    fn the_tiny_models_style_lora_takes_its_scale_from_diffusers_metadata() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny/loras");
        let style = read(&root.join("style.safetensors")).unwrap();
        assert_eq!(style.format, "diffusers");
        assert_eq!(style.components(), [Component::Unet]);
        // lora_alpha 8, r 4 in its lora_adapter_metadata.
        assert!(style.layers.iter().all(|l| l.scale == 2.0 && l.rank() == 4));
        // lcm.safetensors has no metadata: alpha = r.
        let lcm = read(&root.join("lcm.safetensors")).unwrap();
        assert!(lcm.layers.iter().all(|l| l.scale == 1.0));
        assert_eq!(lcm.sha256.len(), 64);
    }
}
