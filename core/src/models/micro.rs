//! What the trained micro model knows: its manifest record and the grammar of its world.
//!
//! Three kinds of model folder, told apart by `manifest.json` ([`super::ModelKind`]):
//! - `micro` (`models/micro`, the default): SD v1.5's structure, trained on a synthetic world of
//!   coloured shapes by `models/micro_src/train.py`. Its manifest has a `micro` section with the
//!   world's grammar, every training stage and the evaluation's numbers. It knows only that
//!   world's words, so the exercises carry prompts for it and the prompt editor lists them.
//! - `tiny` (`models/tiny`): SD v1.5's structure with random weights (`models/make_tiny.py`):
//!   its images are noise. The parity tests against diffusers run on it.
//! - `sd15`: any other export (SD v1.5 itself, through `models/export.py` or optimum-cli).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::ordered::ordered_map;

/// The micro model's record in its manifest (`micro`): what `models/micro_src/train.py` wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MicroRecord {
    /// How training was started (`python models/micro_src/train.py`).
    pub command: Option<String>,
    /// The torch device it trained on (`cuda`, `cpu`).
    pub device: Option<String>,
    /// The world it was trained on.
    pub grammar: Grammar,
    /// Each stage's steps, wall time and results.
    pub stages: serde_json::Value,
    /// Seconds of training, all stages together.
    pub total_wall_s: Option<f64>,
    /// The evaluation (`models/micro_src/evaluate.py`): targets, accuracies, SSIMs.
    pub metrics: serde_json::Value,
}

/// The synthetic world the micro model was trained on (`models/micro_src/world.py`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grammar {
    /// Side of the training images in pixels.
    pub image_size: usize,
    /// Colour names with their sRGB values, in the order written; backgrounds take the same.
    #[serde(deserialize_with = "ordered_map")]
    pub colours: Vec<(String, [u8; 3])>,
    /// Shape names (`circle`, `square`, …).
    pub shapes: Vec<String>,
    /// Size words with the shape's radius as a share of the image.
    #[serde(deserialize_with = "ordered_map")]
    pub sizes: Vec<(String, f64)>,
    /// Position phrases with the shape's centre as a share of the width.
    #[serde(deserialize_with = "ordered_map")]
    pub positions: Vec<(String, f64)>,
    /// The caption template: `a [size] <colour> <shape> [position] on a <background> background…`.
    pub caption: String,
    /// The style LoRA's trigger word (`PixArFK`).
    pub trigger: String,
}

/// Words of every caption that are not one of the grammar's lists.
const FRAME_WORDS: [&str; 6] = ["a", "on", "background", "at", "sunset", "an"];

impl Grammar {
    /// Every word a caption may hold, lower-case (CLIP's tokenizer lower-cases too).
    pub(crate) fn words(&self) -> BTreeSet<String> {
        let lists = self
            .colours
            .iter()
            .map(|(c, _)| c.as_str())
            .chain(self.shapes.iter().map(String::as_str))
            .chain(self.sizes.iter().map(|(s, _)| s.as_str()))
            .chain(self.positions.iter().map(|(p, _)| p.as_str()))
            .chain([self.trigger.as_str()])
            .chain(FRAME_WORDS);
        lists.flat_map(split_words).collect()
    }

    /// The words of `prompt` the model never saw in training, in order, each once. The
    /// trimmed text encoder gives them all the same blank embedding.
    pub fn unknown_words(&self, prompt: &str) -> Vec<String> {
        let known = self.words();
        let mut out: Vec<String> = Vec::new();
        for w in split_words(prompt) {
            if !known.contains(&w) && !out.contains(&w) {
                out.push(w);
            }
        }
        out
    }

    /// The scene `prompt` asks for in this world's words: the colour word right before the
    /// shape word, the shape, and the colour word right before "background" (case ignored).
    /// `None` when it does not name all three.
    pub fn intended(&self, prompt: &str) -> Option<super::judge::Labels> {
        let words = split_words(prompt);
        let colour_at = |i: usize| {
            let w = words.get(i)?;
            self.colours
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(w))
                .map(|(c, _)| c.clone())
        };
        let (at, shape) = words.iter().enumerate().find_map(|(i, w)| {
            let s = self.shapes.iter().find(|s| s.eq_ignore_ascii_case(w))?;
            Some((i, s.clone()))
        })?;
        let colour = colour_at(at.checked_sub(1)?)?;
        let bg = words.iter().position(|w| w == "background")?;
        let background = colour_at(bg.checked_sub(1)?)?;
        Some(super::judge::Labels {
            colour,
            shape,
            background,
        })
    }

    /// What the model knows, in short lines (under 64 characters for the standard world)
    /// for the prompt editor and `speedscape models`.
    pub fn describe(&self) -> Vec<String> {
        fn names<T>(v: &[(String, T)]) -> String {
            v.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" | ")
        }
        vec![
            "a [size] <colour> <shape> [position] on a <colour> background".into(),
            format!(
                "  + \" at sunset\" (optional), + \", {}\" (the style LoRA)",
                self.trigger
            ),
            format!("colours: {}", names(&self.colours)),
            format!("shapes: {}", self.shapes.join(" | ")),
            format!("sizes: {}", names(&self.sizes)),
            format!("positions: {}", names(&self.positions)),
        ]
    }
}

/// Lower-case words: runs of letters and digits.
fn split_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelKind;
    use std::path::Path;

    fn grammar() -> Grammar {
        let json = r#"{
            "image_size": 64,
            "colours": {"red": [220, 38, 38], "yellow": [245, 210, 30], "blue": [40, 80, 225]},
            "shapes": ["circle", "star"],
            "sizes": {"small": 0.2, "large": 0.3},
            "positions": {"on the left": 0.34, "in the middle": 0.5},
            "caption": "a [size] <colour> <shape> [position] on a <background> background[ at sunset][, PixArFK]",
            "trigger": "PixArFK",
            "a_later_key": 1
        }"#;
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_grammar_keeps_its_written_order_and_ignores_unknown_keys() {
        let g = grammar();
        let colours: Vec<&str> = g.colours.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(colours, ["red", "yellow", "blue"]);
        assert_eq!(g.colours[1].1, [245, 210, 30]);
        assert_eq!(g.positions[1], ("in the middle".to_string(), 0.5));
    }

    #[test]
    fn a_caption_of_the_grammar_has_no_unknown_words() {
        let g = grammar();
        for prompt in [
            "a large yellow star on a blue background at sunset",
            "a small red circle on the left on a yellow background, PixArFK",
            "A Blue Star in the middle on a red background, pixarfk",
        ] {
            assert_eq!(g.unknown_words(prompt), Vec::<String>::new(), "{prompt}");
        }
    }

    #[test]
    fn words_outside_the_world_are_named_once_in_order() {
        let g = grammar();
        assert_eq!(
            g.unknown_words("a small cottage on a hillside at sunset, a cottage, green"),
            ["cottage", "hillside", "green"]
        );
    }

    #[test]
    fn the_intended_scene_is_read_off_a_caption_of_the_grammar() {
        let g = grammar();
        let l = g
            .intended("a large yellow star on the right on a blue background at sunset, PixArFK")
            .unwrap();
        assert_eq!(
            (l.colour.as_str(), l.shape.as_str(), l.background.as_str()),
            ("yellow", "star", "blue")
        );
        let caps = g.intended("A Red Circle on a Yellow background").unwrap();
        assert_eq!(
            (caps.colour, caps.background),
            ("red".into(), "yellow".into())
        );
        // Something missing or outside the world: no scene.
        assert_eq!(g.intended("a red circle"), None);
        assert_eq!(g.intended("a green circle on a red background"), None);
        assert_eq!(g.intended("a cottage on a hillside"), None);
    }

    #[test]
    fn the_description_lists_each_choice() {
        let lines = grammar().describe();
        assert_eq!(
            lines[1],
            "  + \" at sunset\" (optional), + \", PixArFK\" (the style LoRA)"
        );
        assert_eq!(lines[2], "colours: red | yellow | blue");
        assert_eq!(lines[3], "shapes: circle | star");
        assert_eq!(lines[4], "sizes: small | large");
        assert_eq!(lines[5], "positions: on the left | in the middle");
    }

    #[test]
    fn the_kind_of_each_committed_model_comes_from_its_manifest() {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        assert_eq!(
            ModelKind::of_folder(&root.join("models/tiny")),
            ModelKind::Tiny
        );
        assert_eq!(
            ModelKind::of_folder(&root.join("models/micro")),
            ModelKind::Micro
        );
        // No manifest: an SD v1.5 export as optimum-cli writes it.
        assert_eq!(ModelKind::of_folder(&root.join("src")), ModelKind::Sd15);
    }
}
