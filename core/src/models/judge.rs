//! The micro model's judge (`judge/model.onnx`): a small CNN, trained beside the micro model on
//! its world's renders, that reads an image's colour, shape and background — a reference-free
//! quality number for the micro model ("judge accuracy": the share of the three it reads as the
//! prompt names them). What the prompt names comes from the folder's grammar
//! ([`super::micro::Grammar::intended`]); the judge's classes are the grammar's lists in order.
//!
//! ```text
//! judge/model.onnx  image f32 [N,3,S,S] RGB in [0,1]  →  colour [N,C], shape [N,K], background [N,C] logits
//! ```
//! `models/micro_src/export_micro.py` writes the folder with its evaluation in the manifest;
//! images of another size than `S` are resized (triangle filter) first.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eyre::{WrapErr, eyre};
use image::RgbImage;
use ndarray::{Array4, Ix2};
use ort::session::Session;
use serde::{Deserialize, Serialize};

use super::micro::Grammar;
use super::{describe_all, is_float, run_error};
use crate::error::Fixable;
use crate::runtime::Runtime;
use crate::runtime::failure::MemoryContext;
use crate::runtime::tensor::{self, IoSpec};

/// The judge's folder inside a model folder.
pub const JUDGE_FOLDER: &str = "judge";

/// The judge's heads, in the order [`Labels`] holds them.
pub const HEADS: [&str; 3] = ["colour", "shape", "background"];

/// What an image shows, or what a prompt asks for, in the grammar's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// The shape's colour.
    pub colour: String,
    /// The shape (`circle`, `star`, …).
    pub shape: String,
    /// The background's colour.
    pub background: String,
}

impl Labels {
    fn as_array(&self) -> [&str; 3] {
        [&self.colour, &self.shape, &self.background]
    }
}

/// One image read by the judge against its prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeReading {
    /// What the judge read.
    pub read: Labels,
    /// What the prompt names; `None` when it does not name a colour, a shape and a background
    /// in the grammar's words (then there is no accuracy).
    pub intended: Option<Labels>,
    /// Colour, shape and background each read right (in [`HEADS`]' order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub right: Option<[bool; 3]>,
    /// The share of the three read right: 0, ⅓, ⅔ or 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

impl JudgeReading {
    /// `read` against `intended`.
    pub fn of(read: Labels, intended: Option<Labels>) -> Self {
        let right = intended.as_ref().map(|want| {
            let (a, b) = (read.as_array(), want.as_array());
            [0, 1, 2].map(|i| a[i].eq_ignore_ascii_case(b[i]))
        });
        let accuracy = right.map(|r| r.iter().filter(|&&ok| ok).count() as f64 / 3.0);
        Self {
            read,
            intended,
            right,
            accuracy,
        }
    }
}

/// A session of the judge, with the grammar whose lists name its classes.
pub struct Judge {
    session: Session,
    input: IoSpec,
    /// The image side the graph takes.
    pub size: usize,
    /// Each head's class names, in [`HEADS`]' order.
    classes: [Vec<String>; 3],
    /// Its `model.onnx`.
    pub file: PathBuf,
    /// Time spent inside ONNX Runtime's run calls so far.
    pub ort: Duration,
    memory: MemoryContext,
}

fn fix(root: &Path) -> String {
    format!(
        "export the judge again with the micro model (`.venv-ref/bin/python models/micro_src/export_micro.py --add-judge`), or remove {} to run without judge accuracy",
        root.join(JUDGE_FOLDER).display()
    )
}

impl Judge {
    /// Whether the model folder `root` has a judge (filesystem only).
    pub fn present(root: &Path) -> bool {
        root.join(JUDGE_FOLDER).join("model.onnx").is_file()
    }

    /// The judge of the folder `root`, checked against its `grammar`: `Ok(None)` without one;
    /// an error (cause and fix) when its graph does not take an image and give the three heads,
    /// or a head's class count is not the grammar's.
    pub fn open(rt: &Runtime, root: &Path, grammar: &Grammar) -> eyre::Result<Option<Self>> {
        if !Self::present(root) {
            return Ok(None);
        }
        let file = root.join(JUDGE_FOLDER).join("model.onnx");
        let session = rt
            .session(&file)
            .wrap_err_with(|| format!("loading the judge {}", file.display()))?;
        let inputs = tensor::inputs(&session);
        let outputs = tensor::outputs(&session);
        let image = match inputs.as_slice() {
            [one] if one.rank() == 4 && is_float(one.elem) => one.clone(),
            _ => {
                return Err(eyre!(Fixable::new(
                    format!(
                        "{} is not a judge: expected one input image float[N,3,S,S], found {}",
                        file.display(),
                        describe_all(&inputs)
                    ),
                    fix(root),
                )));
            }
        };
        let colours: Vec<String> = grammar.colours.iter().map(|(c, _)| c.clone()).collect();
        let classes = [colours.clone(), grammar.shapes.clone(), colours];
        for (head, names) in HEADS.iter().zip(&classes) {
            let out = super::find(&outputs, head).filter(|o| o.rank() == 2);
            let count = out.map(|o| o.shape[1]);
            if count.is_none_or(|c| c > 0 && c as usize != names.len()) {
                return Err(eyre!(Fixable::new(
                    format!(
                        "the judge {} does not read this model's world: its {head} output should be logits [N, {}] ({}), found outputs {}",
                        file.display(),
                        names.len(),
                        names.join(", "),
                        describe_all(&outputs)
                    ),
                    fix(root),
                )));
            }
        }
        let size = match image.shape.as_slice() {
            [_, _, h, _] if *h > 0 => *h as usize,
            _ => grammar.image_size.max(1),
        };
        Ok(Some(Self {
            session,
            input: image,
            size,
            classes,
            file,
            ort: Duration::ZERO,
            memory: rt.memory_context(),
        }))
    }

    /// Each head's logits for `image` (resized to the judge's side first when it differs), in
    /// [`HEADS`]' order.
    pub fn logits(&mut self, image: &RgbImage) -> eyre::Result<[Vec<f32>; 3]> {
        let s = self.size as u32;
        let resized;
        let image = if image.dimensions() == (s, s) {
            image
        } else {
            resized = image::imageops::resize(image, s, s, image::imageops::FilterType::Triangle);
            &resized
        };
        let n = self.size;
        let x = Array4::from_shape_fn((1, 3, n, n), |(_, c, y, x)| {
            f32::from(image.get_pixel(x as u32, y as u32)[c]) / 255.0
        });
        let input = tensor::float_input(x.view().into_dyn(), self.input.elem)?;
        let start = Instant::now();
        let outputs = self
            .session
            .run(ort::inputs![self.input.name.as_str() => input])
            .map_err(|e| run_error(self.memory, "running the judge", &self.file, e))?;
        self.ort += start.elapsed();
        let mut out: [Vec<f32>; 3] = Default::default();
        for (slot, head) in out.iter_mut().zip(HEADS) {
            let logits = tensor::float_output(&outputs[head])?.into_dimensionality::<Ix2>()?;
            *slot = logits.row(0).to_vec();
        }
        Ok(out)
    }

    /// What the judge reads off `image`: each head's most likely class.
    pub fn read(&mut self, image: &RgbImage) -> eyre::Result<Labels> {
        let logits = self.logits(image)?;
        let [colour, shape, background] = [0, 1, 2].map(|h| {
            let best = logits[h]
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            self.classes[h][best].clone()
        });
        Ok(Labels {
            colour,
            shape,
            background,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(c: &str, s: &str, b: &str) -> Labels {
        Labels {
            colour: c.into(),
            shape: s.into(),
            background: b.into(),
        }
    }

    #[test]
    fn accuracy_is_the_share_of_heads_read_as_the_prompt_names_them() {
        let want = Some(labels("red", "star", "blue"));
        let all = JudgeReading::of(labels("red", "star", "blue"), want.clone());
        assert_eq!(all.right, Some([true, true, true]));
        assert_eq!(all.accuracy, Some(1.0));
        let shape_wrong = JudgeReading::of(labels("red", "circle", "blue"), want.clone());
        assert_eq!(shape_wrong.right, Some([true, false, true]));
        assert!((shape_wrong.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        let none = JudgeReading::of(labels("blue", "circle", "red"), want);
        assert_eq!(none.accuracy, Some(0.0));
    }

    #[test]
    fn a_prompt_that_names_no_scene_has_no_accuracy() {
        let r = JudgeReading::of(labels("red", "star", "blue"), None);
        assert_eq!((r.right, r.accuracy), (None, None));
    }
}
