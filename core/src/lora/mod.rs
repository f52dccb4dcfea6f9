//! LoRA adapters at run time: which adapters a run asks for and at what weights
//! ([`AdapterWeight`], parsed from `NAME_OR_FILE=WEIGHT`), reading their `.safetensors` files
//! (diffusers/peft and kohya layouts), finding each target's weight in an exported ONNX graph,
//! and fusing `W' = W + Σᵢ wᵢ · (αᵢ/rᵢ) · Bᵢ·Aᵢ` into initializers that override the graph's
//! own when ONNX Runtime makes the session — no graph written to disk, no Python.

mod file;
mod fuse;
mod graph;
mod onnx;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Fixable;
pub(crate) use file::Component;
pub(crate) use fuse::Overrides;

/// The largest |weight| a run may give an adapter: beyond it a LoRA's update swamps the base
/// weights and the image is noise, so a larger one is almost surely a typo.
pub const MAX_WEIGHT: f32 = 10.0;

/// One adapter a run applies, and its weight: `--lora NAME_OR_FILE=WEIGHT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterWeight {
    /// An adapter of the model folder (`lcm`, `style`: a file in its `loras/`) or a path to a
    /// LoRA `.safetensors` file.
    pub adapter: String,
    /// The scale of its low-rank update (1 = as trained; negative subtracts it).
    pub weight: f32,
}

impl AdapterWeight {
    /// `NAME_OR_FILE=WEIGHT`, split at the last `=` (a path may hold `=`); the weight finite and
    /// within ±[`MAX_WEIGHT`].
    pub fn parse(spec: &str) -> eyre::Result<Self> {
        let Some((adapter, weight)) = spec.rsplit_once('=') else {
            return Err(Fixable::new(
                format!("LoRA {spec:?} has no weight"),
                format!("write NAME_OR_FILE=WEIGHT, e.g. {spec}=1.0"),
            )
            .into());
        };
        let adapter = adapter.trim();
        if adapter.is_empty() {
            return Err(Fixable::new(
                format!("LoRA {spec:?} names no adapter before the `=`"),
                "write NAME_OR_FILE=WEIGHT, e.g. style=0.6 or path/to/lora.safetensors=0.8",
            )
            .into());
        }
        let weight: f32 = weight.trim().parse().map_err(|_| {
            Fixable::new(
                format!("LoRA {adapter:?}: weight {weight:?} is not a number"),
                format!("write a number after the last `=`, e.g. {adapter}=0.6"),
            )
        })?;
        let this = AdapterWeight {
            adapter: adapter.to_string(),
            weight,
        };
        this.check()?;
        Ok(this)
    }

    /// The weight is finite and within ±[`MAX_WEIGHT`].
    pub fn check(&self) -> eyre::Result<()> {
        if !self.weight.is_finite() || self.weight.abs() > MAX_WEIGHT {
            return Err(Fixable::new(
                format!(
                    "LoRA {:?}: weight {} is outside -{MAX_WEIGHT}..{MAX_WEIGHT}",
                    self.adapter, self.weight
                ),
                "use a finite weight; 1.0 applies the adapter as trained, 0.5 half as strongly",
            )
            .into());
        }
        Ok(())
    }
}

impl fmt::Display for AdapterWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.adapter, self.weight)
    }
}

impl FromStr for AdapterWeight {
    type Err = eyre::Report;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks a run's adapters: each weight valid, no adapter twice.
pub fn check_set(set: &[AdapterWeight]) -> eyre::Result<()> {
    for (i, a) in set.iter().enumerate() {
        a.check()?;
        if set[..i].iter().any(|b| b.adapter == a.adapter) {
            return Err(Fixable::new(
                format!("LoRA {:?} is given twice", a.adapter),
                "give each adapter once, with the weight you want (weights do not add up)",
            )
            .into());
        }
    }
    Ok(())
}

/// An adapter as a run applied it, for reports: which file, its digest, the weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedAdapter {
    /// The name it was asked by (a folder adapter's name, or the file's stem).
    pub name: String,
    /// The `.safetensors` file read.
    pub file: String,
    /// SHA-256 of that file, lower-case hex.
    pub sha256: String,
    /// The weight applied.
    pub weight: f32,
    /// `diffusers` (peft keys) or `kohya`.
    pub format: String,
    /// What it changed: `unet`, `text_encoder`.
    pub components: Vec<String>,
}

/// An adapter file a model folder offers by name (its `loras/` folder, as the exporter's
/// `--copy-loras` writes it).
#[derive(Debug, Clone, PartialEq)]
pub struct FolderAdapter {
    /// The name `--lora NAME=…` takes (the file's stem, or manifest.json's name for it).
    pub name: String,
    /// Its `.safetensors` file.
    pub file: std::path::PathBuf,
}

/// The adapters a model folder offers by name: the `.safetensors` files in its `loras/`
/// (the exporter's `--copy-loras`), named by their stems, sorted by name. A folder without
/// `loras/` offers none.
pub fn folder_adapters(root: &std::path::Path) -> Vec<FolderAdapter> {
    let mut found: Vec<FolderAdapter> = std::fs::read_dir(root.join("loras"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|file| {
            let name = file.file_stem()?.to_string_lossy().into_owned();
            Some(FolderAdapter { name, file })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// An adapter of a run, found and checked (its file read once and remembered by path, size
/// and modification time; the layers are read again only when a session is fused).
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The name it was asked by: a folder adapter's name, or the file's stem.
    pub(crate) name: String,
    pub(crate) weight: f32,
    pub(crate) path: PathBuf,
    summary: Summary,
}

/// What a LoRA file is, without its tensors.
#[derive(Debug, Clone)]
struct Summary {
    sha256: String,
    format: &'static str,
    components: Vec<Component>,
}

/// LoRA files already read, by (path, size, modification time).
#[derive(Debug, Default)]
pub(crate) struct Seen(Vec<(PathBuf, u64, Option<std::time::SystemTime>, Summary)>);

impl Seen {
    fn summary(&mut self, path: &Path) -> eyre::Result<Summary> {
        let stat = std::fs::metadata(path).ok();
        let (size, mtime) = (
            stat.as_ref().map_or(0, |m| m.len()),
            stat.as_ref().and_then(|m| m.modified().ok()),
        );
        if let Some((.., s)) = self
            .0
            .iter()
            .find(|(p, z, t, _)| p == path && *z == size && *t == mtime)
        {
            return Ok(s.clone());
        }
        let f = file::read(path)?;
        let summary = Summary {
            sha256: f.sha256.clone(),
            format: f.format,
            components: f.components(),
        };
        self.0.retain(|(p, ..)| p != path);
        self.0
            .push((path.to_path_buf(), size, mtime, summary.clone()));
        Ok(summary)
    }
}

/// Finds and checks a run's adapters: a name of `root`'s adapters ([`folder_adapters`]) or a
/// path to a `.safetensors` file. An unknown name lists the folder's adapters.
pub(crate) fn resolve(
    root: &Path,
    set: &[AdapterWeight],
    seen: &mut Seen,
) -> eyre::Result<Vec<Resolved>> {
    check_set(set)?;
    let offered = folder_adapters(root);
    let names: Vec<String> = offered.iter().map(|f| f.name.clone()).collect();
    if let Some(e) = unknown_adapter(set, &names) {
        return Err(e.into());
    }
    set.iter()
        .map(|a| {
            let (name, path) = match offered.iter().find(|f| f.name == a.adapter) {
                Some(f) => (f.name.clone(), f.file.clone()),
                None => {
                    let path = PathBuf::from(&a.adapter);
                    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
                    (stem.unwrap_or_else(|| a.adapter.clone()), path)
                }
            };
            Ok(Resolved {
                name,
                weight: a.weight,
                summary: seen.summary(&path)?,
                path,
            })
        })
        .collect()
}

/// The first adapter of `set` that is neither one of a model folder's adapters (`offered`, by
/// name: [`folder_adapters`]) nor a file that exists, as the error that says so and lists the
/// folder's adapters. What a run checks before any session; the engine checks it again.
pub fn unknown_adapter(set: &[AdapterWeight], offered: &[String]) -> Option<Fixable> {
    let a = set
        .iter()
        .find(|a| !offered.contains(&a.adapter) && !Path::new(&a.adapter).is_file())?;
    let known = if offered.is_empty() {
        "the model folder has no loras/ folder, so no adapter by name".to_string()
    } else {
        format!("the model folder's adapters: {}", offered.join(", "))
    };
    Some(Fixable::new(
        format!(
            "LoRA {:?} is neither an adapter of the model folder nor a file; {known}",
            a.adapter
        ),
        "name one of the folder's adapters (speedscape models lists them) or the path of a LoRA .safetensors file",
    ))
}

/// The adapters as reports name them.
pub(crate) fn applied(adapters: &[Resolved]) -> Vec<AppliedAdapter> {
    adapters
        .iter()
        .map(|a| AppliedAdapter {
            name: a.name.clone(),
            file: a.path.display().to_string(),
            sha256: a.summary.sha256.clone(),
            weight: a.weight,
            format: a.summary.format.to_string(),
            components: a
                .summary
                .components
                .iter()
                .map(|c| c.name().into())
                .collect(),
        })
        .collect()
}

/// What distinguishes a session of a `component` graph fused with `adapters`: each adapter
/// that changes it, by name, file digest and weight, in order (empty: none changes it).
pub(crate) fn fingerprint(adapters: &[Resolved], component: Component) -> String {
    adapters
        .iter()
        .filter(|a| a.summary.components.contains(&component))
        .map(|a| format!("+{}@{}={}", a.name, &a.summary.sha256[..12], a.weight))
        .collect()
}

/// The initializers overriding `graph_file`'s (a `component` graph) for `adapters` (their
/// files read again, those that change the component only); `family`, the model's family in
/// words, is what a shape mismatch says the LoRA does not fit.
pub(crate) fn overrides(
    graph_file: &Path,
    component: Component,
    adapters: &[Resolved],
    family: &str,
) -> eyre::Result<Overrides> {
    let files: Vec<(file::LoraFile, f32)> = adapters
        .iter()
        .filter(|a| a.summary.components.contains(&component))
        .map(|a| Ok((file::read(&a.path)?, a.weight)))
        .collect::<eyre::Result<_>>()?;
    if files.is_empty() {
        // Nothing changes this component: its graph is not even read.
        return Ok(Overrides::default());
    }
    let set: Vec<(&file::LoraFile, f32)> = files.iter().map(|(f, w)| (f, *w)).collect();
    fuse::overrides(graph_file, component, &set, family)
}

#[cfg(test)]
mod tests {
    use super::file::ModuleName;
    use super::*;

    #[test]
    fn specs_split_at_the_last_equals_and_weights_are_checked() {
        let a = AdapterWeight::parse("style=0.6").unwrap();
        assert_eq!((a.adapter.as_str(), a.weight), ("style", 0.6));
        let a = AdapterWeight::parse("dir/a=b.safetensors=-0.5").unwrap();
        assert_eq!(
            (a.adapter.as_str(), a.weight),
            ("dir/a=b.safetensors", -0.5)
        );
        for bad in [
            "style",
            "=1",
            "style=x",
            "style=NaN",
            "style=inf",
            "style=10.5",
        ] {
            let e = AdapterWeight::parse(bad).unwrap_err();
            assert_eq!(crate::error::parts(&e).fixes.len(), 1, "{bad}: {e:?}");
        }
        let dup = [
            AdapterWeight::parse("style=1").unwrap(),
            AdapterWeight::parse("style=0.5").unwrap(),
        ];
        assert!(
            check_set(&dup)
                .unwrap_err()
                .to_string()
                .contains("given twice")
        );
    }

    #[test]
    fn a_folder_offers_the_safetensors_files_in_its_loras_folder() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny");
        let names: Vec<String> = folder_adapters(&root).into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["lcm", "style"]);
        assert!(folder_adapters(std::path::Path::new("/nonexistent")).is_empty());
    }

    /// Writes a safetensors file of float32 `tensors` (name, shape, values) into `dir`.
    fn write_file(dir: &Path, name: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> PathBuf {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(n, shape, v)| {
                let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (n.to_string(), b, shape.clone())
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(n, b, shape)| {
                let view =
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                        .unwrap();
                (n.clone(), view)
            })
            .collect();
        let path = dir.join(name);
        safetensors::serialize_to_file(views, None, &path).unwrap();
        path
    }

    fn tiny() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny")
    }

    fn error_of(spec: &str) -> (String, String) {
        let set = [AdapterWeight::parse(spec).unwrap()];
        let result = resolve(&tiny(), &set, &mut Seen::default()).and_then(|r| {
            overrides(
                &tiny().join("unet/model.onnx"),
                Component::Unet,
                &r,
                "SD v1.5",
            )
            .map(|_| ())
        });
        let e = result.expect_err(spec);
        let parts = crate::error::parts(&e);
        (parts.causes.join(" / "), parts.fixes.join(" / "))
    }

    /// A LoRA for one family on a model of the other, both ways (tiny: SD v1.5's structure,
    /// cross-attention 32 wide; tiny_turbo: SD-Turbo's, 8 wide), and a full-size SD 2.x update:
    /// refused before any session, naming the module, both shapes and the model's family.
    #[test]
    fn a_lora_for_another_family_is_refused_naming_shapes_and_families() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let k = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k";
        let lora = |name: &str, out: usize, text: usize| {
            write_file(
                d,
                name,
                &[
                    (
                        &format!("unet.{k}.lora_A.weight"),
                        vec![2, text],
                        vec![0.0; 2 * text],
                    ),
                    (
                        &format!("unet.{k}.lora_B.weight"),
                        vec![out, 2],
                        vec![0.0; 2 * out],
                    ),
                ],
            )
        };
        let refuse = |model: &Path, file: &Path| {
            let set = [AdapterWeight::parse(&format!("{}=1", file.display())).unwrap()];
            let family = if model.ends_with("tiny_turbo") {
                "SD-Turbo (SD 2.1's architecture)"
            } else {
                "SD v1.5"
            };
            let e = resolve(model, &set, &mut Seen::default())
                .and_then(|r| {
                    overrides(&model.join("unet/model.onnx"), Component::Unet, &r, family)
                })
                .map(|_| ())
                .expect_err("a LoRA of another family");
            let parts = crate::error::parts(&e);
            (parts.causes.join(" / "), parts.fixes.join(" / "))
        };
        let turbo = tiny().with_file_name("tiny_turbo");
        // tiny_turbo's update ([16, 8]) on tiny ([32, 32]).
        let (cause, fix) = refuse(&tiny(), &lora("for_turbo.safetensors", 16, 8));
        assert!(
            cause.contains(k) && cause.contains("[16, 8]") && cause.contains("[32, 32]"),
            "{cause}"
        );
        assert!(cause.contains("this model is SD v1.5"), "{cause}");
        assert!(
            fix.contains("trained for SD v1.5") && fix.contains("SD 2.x"),
            "{fix}"
        );
        // tiny's update ([32, 32]) on tiny_turbo ([16, 8]).
        let (cause, fix) = refuse(&turbo, &lora("for_sd15.safetensors", 32, 32));
        assert!(
            cause.contains("[32, 32]") && cause.contains("[16, 8]"),
            "{cause}"
        );
        assert!(cause.contains("this model is SD-Turbo"), "{cause}");
        assert!(fix.contains("trained for SD-Turbo"), "{fix}");
        // A full-size SD 2.x update (1024-wide text) says which family reads that width.
        let (cause, _) = refuse(&tiny(), &lora("sd2_full.safetensors", 32, 1024));
        assert!(
            cause.contains("reads 1024-wide text was trained for SD 2.x or SD-Turbo"),
            "{cause}"
        );
    }

    #[test]
    fn bad_adapters_are_refused_naming_the_cause_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let q = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k";
        // An adapter name the folder does not offer: the message lists those it does.
        let (cause, fix) = error_of("pixel=1");
        assert!(
            cause.contains("LoRA \"pixel\" is neither") && cause.contains("lcm, style"),
            "{cause}"
        );
        assert!(fix.contains("path of a LoRA .safetensors file"), "{fix}");
        // A missing file.
        let (cause, _) = error_of(&format!("{}/gone.safetensors=1", d.display()));
        assert!(
            cause.contains("gone.safetensors") && cause.contains("nor a file"),
            "{cause}"
        );
        // Not safetensors.
        std::fs::write(d.join("text.safetensors"), "not a tensor file").unwrap();
        let (cause, fix) = error_of(&format!("{}/text.safetensors=1", d.display()));
        assert!(cause.contains("is not a safetensors file"), "{cause}");
        assert!(fix.contains(".safetensors"), "{fix}");
        // Unknown layout.
        let p = write_file(
            d,
            "odd.safetensors",
            &[("model.weight", vec![2], vec![0.0; 2])],
        );
        let (cause, _) = error_of(&format!("{}=1", p.display()));
        assert!(
            cause.contains("holds no LoRA tensors") && cause.contains("model.weight"),
            "{cause}"
        );
        // LoHa, named.
        let p = write_file(
            d,
            "loha.safetensors",
            &[(
                &format!("lora_unet_{}.hada_w1_a", q.replace('.', "_")),
                vec![2],
                vec![0.0; 2],
            )],
        );
        let (cause, fix) = error_of(&format!("{}=1", p.display()));
        assert!(
            cause.contains("LoHa") && cause.contains("hada_w1_a"),
            "{cause}"
        );
        assert!(fix.contains("LoRA"), "{fix}");
        // An SD 2.x-shaped update (cross-attention from 1024-wide text): module and both shapes.
        let p = write_file(
            d,
            "sd2.safetensors",
            &[
                (
                    &format!("unet.{q}.lora_A.weight"),
                    vec![4, 1024],
                    vec![0.0; 4096],
                ),
                (
                    &format!("unet.{q}.lora_B.weight"),
                    vec![32, 4],
                    vec![0.0; 128],
                ),
            ],
        );
        let (cause, fix) = error_of(&format!("{}=1", p.display()));
        assert!(
            cause.contains(q) && cause.contains("[32, 1024]") && cause.contains("[32, 32]"),
            "{cause}"
        );
        assert!(fix.contains("SD 2.x"), "{fix}");
        // A module the graph does not have.
        let p = write_file(
            d,
            "extra.safetensors",
            &[
                (
                    "unet.down_blocks.7.attn.to_q.lora_A.weight",
                    vec![4, 32],
                    vec![0.0; 128],
                ),
                (
                    "unet.down_blocks.7.attn.to_q.lora_B.weight",
                    vec![32, 4],
                    vec![0.0; 128],
                ),
            ],
        );
        let (cause, _) = error_of(&format!("{}=1", p.display()));
        assert!(
            cause.contains("module down_blocks.7.attn.to_q is not in"),
            "{cause}"
        );
    }

    #[test]
    fn a_graph_whose_attention_is_fused_says_run_time_lora_needs_the_unfused_export() {
        // What `--optimize cuda` leaves: q/k/v packed into one MatMul feeding a
        // MultiHeadAttention; the output projection keeps its name.
        let attn = "/unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1";
        let graph = onnx::encode_graph(
            &[
                ("MatMul", &format!("{attn}/MatMul_QKV"), &["x", "qkv"]),
                ("MultiHeadAttention", &format!("{attn}/Attention"), &["q"]),
                (
                    "MatMul",
                    &format!("{attn}/to_out.0/MatMul"),
                    &["a", "out_w"],
                ),
            ],
            &[
                ("qkv", vec![32, 96], vec![0.0; 32 * 96]),
                ("out_w", vec![32, 32], vec![0.5; 1024]),
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        std::fs::write(&model, graph).unwrap();
        let lora = |module: &str| {
            let m = ModuleName::Dotted(format!(
                "down_blocks.0.attentions.0.transformer_blocks.0.attn1.{module}"
            ));
            file::LoraFile {
                path: dir.path().join("a.safetensors"),
                sha256: "0".repeat(64),
                format: "diffusers",
                layers: vec![file::Layer {
                    component: Component::Unet,
                    module: m,
                    down: vec![1.0; 32],
                    down_shape: vec![1, 32],
                    up: vec![1.0; 32],
                    up_shape: vec![32, 1],
                    scale: 1.0,
                }],
            }
        };
        // The projection that kept its node maps, and is fused: 0.5 + 2 · 1 · 1 (values need
        // ONNX Runtime loaded).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let plan = crate::runtime::SearchPlan::new(None, Some(&root));
        crate::runtime::Runtime::init(&plan, crate::runtime::Device::Cpu).unwrap();
        let out = lora("to_out.0");
        let o = fuse::overrides(&model, Component::Unet, &[(&out, 2.0)], "SD v1.5").unwrap();
        assert_eq!(o.0.len(), 1);
        let (name, value) = &o.0[0];
        assert_eq!(name, "out_w");
        let (_, data) = value.try_extract_tensor::<f32>().unwrap();
        assert!(data.iter().all(|&v| v == 2.5));
        // to_q went into the packed MatMul: refused, naming the fused operator and the fix.
        let q = lora("to_q");
        let Err(e) = fuse::overrides(&model, Component::Unet, &[(&q, 1.0)], "SD v1.5") else {
            panic!("to_q mapped")
        };
        let parts = crate::error::parts(&e);
        assert!(
            parts.causes[0].contains("MultiHeadAttention")
                && parts.causes[0].contains("attn1.to_q"),
            "{parts:?}"
        );
        assert!(parts.fixes[0].contains("without --optimize"), "{parts:?}");
    }
}
