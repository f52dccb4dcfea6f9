//! Prompt sets: the file `speedscape sweep --prompts FILE` reads, so a landscape is the mean over
//! many prompts instead of one. Two forms, told apart by the first entry:
//!
//! - plain text: one prompt per line;
//! - JSON Lines: one object per line, `{"prompt": "…", "prompts": {"micro": "…"}}`, as an
//!   `[[exercises]]` entry has them: `prompt` for any model, `prompts` by model kind (`micro`,
//!   `tiny`, `sd15`) replacing it on that kind. An entry without a prompt for the model's kind
//!   (no `prompt`, no `prompts.<kind>`) is left out on that kind, and said so.
//!
//! In both, blank lines and lines starting with `#` are skipped. `assets/prompts/` ships one
//! set for SD v1.5 and one for the micro model's world.

use std::path::{Path, PathBuf};

use color_eyre::eyre::bail;
use serde::Deserialize;

use crate::error::{FixErr, Fixable};
use crate::models::{ModelKind, ModelPrompts};

/// Most prompts a set may hold: each one is a run per point and seed.
pub const MAX_PROMPTS: usize = 2000;

/// One entry of a JSON Lines set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    prompts: ModelPrompts,
}

/// A prompt set as read: each entry with its line number.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSet {
    pub file: PathBuf,
    entries: Vec<(usize, Entry)>,
}

/// A set resolved for one model kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub prompts: Vec<String>,
    /// Line numbers of entries with no prompt for the kind (left out).
    pub skipped: Vec<usize>,
}

impl PromptSet {
    /// Reads `path`; an error names the file, the line and the fix for a missing or unreadable
    /// file, a bad JSON line, an entry without any prompt, a set with none or too many.
    pub fn read(path: &Path) -> color_eyre::Result<Self> {
        let fix_format = "write one prompt per line, or one JSON object per line like {\"prompt\": \"a cat\", \"prompts\": {\"micro\": \"a red circle on a blue background\"}}; lines starting with # are skipped";
        let text = std::fs::read_to_string(path).fix_err_with(|| {
            (
                format!("cannot read the prompt set {}", path.display()),
                "check the path (--prompts FILE); the file must be UTF-8 text",
            )
        })?;
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let json = lines.first().is_some_and(|(_, l)| l.starts_with('{'));
        let mut entries = Vec::with_capacity(lines.len());
        for (n, line) in lines {
            let entry = if json {
                let e: Entry = serde_json::from_str(line).map_err(|e| {
                    Fixable::new(
                        format!("{} line {n} is not a prompt-set entry: {e}", path.display()),
                        fix_format,
                    )
                })?;
                if e.prompt.is_none() && e.prompts.is_empty() {
                    bail!(Fixable::new(
                        format!("{} line {n} has no prompt", path.display()),
                        "give it \"prompt\" (any model) or \"prompts\" by model kind",
                    ));
                }
                e
            } else {
                Entry {
                    prompt: Some(line.to_string()),
                    prompts: ModelPrompts::new(),
                }
            };
            entries.push((n, entry));
        }
        if entries.is_empty() {
            bail!(Fixable::new(
                format!("the prompt set {} has no prompts", path.display()),
                fix_format,
            ));
        }
        if entries.len() > MAX_PROMPTS {
            bail!(Fixable::new(
                format!(
                    "the prompt set {} has {} prompts, more than {MAX_PROMPTS}",
                    path.display(),
                    entries.len()
                ),
                "sample a smaller set: every prompt is a run per point and seed",
            ));
        }
        Ok(Self {
            file: path.to_path_buf(),
            entries,
        })
    }

    /// The prompts for a model of `kind`, in the file's order; an error when none is left.
    pub fn for_kind(&self, kind: ModelKind) -> color_eyre::Result<Resolved> {
        let mut out = Resolved {
            prompts: Vec::new(),
            skipped: Vec::new(),
        };
        for (n, e) in &self.entries {
            match e.prompts.get(&kind).or(e.prompt.as_ref()) {
                Some(p) => out.prompts.push(p.clone()),
                None => out.skipped.push(*n),
            }
        }
        if out.prompts.is_empty() {
            let kind = format!("{kind:?}").to_lowercase();
            bail!(Fixable::new(
                format!(
                    "the prompt set {} has no prompt for a {kind} model: every entry sets only other kinds' prompts",
                    self.file.display()
                ),
                format!(
                    "add \"prompt\" or \"prompts\": {{\"{kind}\": …}} to its entries, or use a set made for this model"
                ),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.txt");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn plain_text_is_one_prompt_per_line_without_blanks_and_comments() {
        let (_d, p) = write("# a set\n\na red fox\n  a blue boat  \n# more\nan owl\n");
        let set = PromptSet::read(&p).unwrap();
        let r = set.for_kind(ModelKind::Sd15).unwrap();
        assert_eq!(r.prompts, ["a red fox", "a blue boat", "an owl"]);
        assert!(r.skipped.is_empty());
    }

    #[test]
    fn json_lines_take_the_kinds_own_prompt_and_skip_entries_without_one() {
        let (_d, p) = write(
            "{\"prompt\": \"a cottage\", \"prompts\": {\"micro\": \"a red circle on a blue background\"}}\n\
             {\"prompts\": {\"sd15\": \"a lighthouse\"}}\n\
             {\"prompt\": \"a fox\"}\n",
        );
        let set = PromptSet::read(&p).unwrap();
        let micro = set.for_kind(ModelKind::Micro).unwrap();
        assert_eq!(
            micro.prompts,
            ["a red circle on a blue background", "a fox"]
        );
        assert_eq!(micro.skipped, [2]);
        let sd = set.for_kind(ModelKind::Sd15).unwrap();
        assert_eq!(sd.prompts, ["a cottage", "a lighthouse", "a fox"]);
    }

    #[test]
    fn bad_sets_name_the_file_the_line_and_the_fix() {
        let cases = [
            (
                "{\"prompt\": \"a\"}\n{\"prompt\": 3}\n",
                "line 2 is not a prompt-set entry",
            ),
            ("{\"prompt\": \"a\", \"seed\": 4}\n", "unknown field `seed`"),
            ("{\"prompts\": {}}\n", "line 1 has no prompt"),
            ("# only comments\n\n", "has no prompts"),
        ];
        for (text, want) in cases {
            let (_d, p) = write(text);
            let e = format!("{:?}", PromptSet::read(&p).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains("set.txt"), "{e}");
        }
        let e = PromptSet::read(Path::new("/no/such/set.txt")).unwrap_err();
        assert!(format!("{e:?}").contains("cannot read the prompt set /no/such/set.txt"));
        let (_d, p) = write("{\"prompts\": {\"sd15\": \"a lighthouse\"}}\n");
        let e = PromptSet::read(&p)
            .unwrap()
            .for_kind(ModelKind::Micro)
            .unwrap_err();
        assert!(
            format!("{e:?}").contains("no prompt for a micro model"),
            "{e:?}"
        );
    }

    #[test]
    fn the_shipped_sets_read_and_are_big_enough() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/prompts");
        let sd = PromptSet::read(&root.join("sd15.txt")).unwrap();
        let sd = sd.for_kind(ModelKind::Sd15).unwrap().prompts;
        assert!(sd.len() >= 50, "{} SD v1.5 prompts", sd.len());
        let micro = PromptSet::read(&root.join("micro.txt")).unwrap();
        let micro = micro.for_kind(ModelKind::Micro).unwrap().prompts;
        assert!(micro.len() >= 100, "{} micro prompts", micro.len());
        // Every micro prompt is in the model's words and names a scene its judge can check.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/micro");
        let manifest = crate::models::Manifest::read(&dir).unwrap().unwrap();
        let grammar = manifest.micro.unwrap().grammar;
        for p in &micro {
            assert_eq!(grammar.unknown_words(p), Vec::<String>::new(), "{p}");
            assert!(grammar.intended(p).is_some(), "{p}");
        }
    }
}
