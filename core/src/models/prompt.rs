//! Prompt text before the tokenizer: control characters out, a size cap, prompt files.
//!
//! A prompt is text for CLIP; control characters (NUL, BEL, ESC and the terminal escape
//! sequences it starts, DEL, C1 controls) are not, and a prompt is echoed to the terminal in
//! warnings, so they are removed (with a note) before anything sees them. Tab, newline and
//! carriage return stay: the tokenizer treats them as spaces.
//!
//! SD v1.5 reads 75 tokens, a few hundred characters; only the first 64 KiB of a prompt are
//! tokenized, so a 10 MB prompt costs no more than a 64 KiB one.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use eyre::{WrapErr, bail};

use crate::error::{FixErr, Fixable};

/// The most prompt text tokenized (bytes, cut at a character boundary): 64 KiB, about a hundred
/// times what 75 CLIP tokens can hold, so no prompt that fits loses anything to the cap.
pub(crate) const MAX_PROMPT_BYTES: usize = 64 * 1024;

/// A prompt made ready for the tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CleanPrompt<'a> {
    /// The text to tokenize: no control characters except tab/newline/CR, at most
    /// [`MAX_PROMPT_BYTES`] bytes.
    pub text: Cow<'a, str>,
    /// Control characters removed (an escape sequence such as `ESC[31m` counts as one).
    pub removed: usize,
    /// The prompt's length in bytes when it was cut to [`MAX_PROMPT_BYTES`].
    pub capped_from: Option<usize>,
}

impl CleanPrompt<'_> {
    /// The notes to show about what was removed or cut (each starts with "prompt").
    pub(crate) fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.removed > 0 {
            notes.push(format!(
                "prompt had {} control character{} (such as NUL, BEL or a terminal escape \
                 sequence), removed: they are not text for CLIP and would reach the terminal raw",
                self.removed,
                if self.removed == 1 { "" } else { "s" }
            ));
        }
        if let Some(len) = self.capped_from {
            notes.push(format!(
                "prompt is {len} bytes; only its first {MAX_PROMPT_BYTES} were tokenized (SD v1.5 \
                 reads at most 75 tokens, a few hundred characters)"
            ));
        }
        notes
    }
}

/// Whether `c` is removed from prompts: C0 and C1 controls and DEL, except `\t`, `\n`, `\r`.
fn is_removed(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// Removes control characters (whole escape sequences: `ESC [ … final`, `ESC ] … BEL|ESC \`,
/// `ESC x`) and cuts the text to [`MAX_PROMPT_BYTES`]. Borrows when nothing changes.
pub(crate) fn clean(prompt: &str) -> CleanPrompt<'_> {
    let capped_from = (prompt.len() > MAX_PROMPT_BYTES).then_some(prompt.len());
    let mut end = prompt.len().min(MAX_PROMPT_BYTES);
    while !prompt.is_char_boundary(end) {
        end -= 1;
    }
    let head = &prompt[..end];
    if !head.chars().any(is_removed) {
        return CleanPrompt {
            text: Cow::Borrowed(head),
            removed: 0,
            capped_from,
        };
    }
    let mut out = String::with_capacity(head.len());
    let mut removed = 0;
    let mut chars = head.chars().peekable();
    while let Some(c) = chars.next() {
        if !is_removed(c) {
            out.push(c);
            continue;
        }
        removed += 1;
        if c != '\u{1b}' {
            continue;
        }
        match chars.peek() {
            // CSI: parameters and intermediates up to a final byte in @..~.
            Some('[') => {
                chars.next();
                for d in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&d) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \.
            Some(']') => {
                chars.next();
                while let Some(d) = chars.next() {
                    if d == '\u{7}' {
                        break;
                    }
                    if d == '\u{1b}' {
                        if chars.peek() == Some(&'\\') {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            // A two-character escape (ESC c, ESC 7, …).
            Some(d) if !d.is_control() => {
                chars.next();
            }
            _ => {}
        }
    }
    CleanPrompt {
        text: Cow::Owned(out),
        removed,
        capped_from,
    }
}

/// Reads a prompt from `path`: UTF-8 text, at most 64 KiB of it (a longer file is read only that
/// far, and the note says so). Invalid UTF-8 is an error naming the file and the
/// byte offset.
pub fn read_prompt_file(path: &Path) -> eyre::Result<(String, Option<String>)> {
    let file = std::fs::File::open(path).fix_err_with(|| {
        (
            format!("cannot open prompt file {}", path.display()),
            "pass an existing text file to --prompt-file",
        )
    })?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    file.take(MAX_PROMPT_BYTES as u64)
        .read_to_end(&mut bytes)
        .wrap_err_with(|| format!("reading prompt file {}", path.display()))?;
    let capped = len > MAX_PROMPT_BYTES as u64;
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        // The cap cut a character in two: drop its first bytes.
        Err(e) if capped && e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(e) => {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            bail!(Fixable::new(
                format!(
                    "prompt file {} is not UTF-8 text: byte {at} (0x{:02x}, line {line}) does not \
                     start a valid UTF-8 character",
                    path.display(),
                    bytes[at]
                ),
                format!(
                    "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {} > prompt.txt`)",
                    path.display()
                ),
            ));
        }
    };
    let note = capped.then(|| {
        format!(
            "prompt file {} is {len} bytes; only its first {MAX_PROMPT_BYTES} were read (SD v1.5 \
             reads at most 75 tokens, a few hundred characters)",
            path.display()
        )
    });
    Ok((text.to_string(), note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let c = clean("a red fox,\tin\nsnow");
        assert!(matches!(c.text, Cow::Borrowed("a red fox,\tin\nsnow")));
        assert_eq!((c.removed, c.capped_from), (0, None));
        assert!(c.notes().is_empty());
    }

    #[test]
    fn control_characters_and_escape_sequences_are_removed_and_counted() {
        let c =
            clean("a \u{7}red\u{0} \u{1b}[31mfox\u{1b}[0m \u{1b}]0;title\u{7}in\u{7f} snow\u{9b}");
        assert_eq!(c.text, "a red fox in snow");
        assert_eq!(c.removed, 7);
        let notes = c.notes();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].starts_with("prompt had 7 control characters"),
            "{notes:?}"
        );
        assert!(notes[0].contains("removed"), "{notes:?}");
    }

    #[test]
    fn a_lone_escape_at_the_end_is_removed() {
        assert_eq!(clean("fox\u{1b}").text, "fox");
        assert_eq!(clean("fox\u{1b}[").text, "fox");
        assert_eq!(clean("fox\u{1b}7 den").text, "fox den");
    }

    #[test]
    fn a_long_prompt_is_cut_at_a_character_boundary_with_a_note() {
        // 3-byte characters: the cap falls inside one.
        let long = "東".repeat(MAX_PROMPT_BYTES / 3 + 10);
        let c = clean(&long);
        assert!(c.text.len() <= MAX_PROMPT_BYTES && c.text.len() > MAX_PROMPT_BYTES - 3);
        assert_eq!(c.capped_from, Some(long.len()));
        let notes = c.notes();
        assert!(
            notes[0].contains(&format!("prompt is {} bytes", long.len()))
                && notes[0].contains(&format!("first {MAX_PROMPT_BYTES}")),
            "{notes:?}"
        );
    }

    #[test]
    fn a_prompt_file_that_is_not_utf8_names_the_file_and_the_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.txt");
        std::fs::write(&path, b"a red fox\nin sn\xf6w").unwrap();
        let msg = format!("{}", read_prompt_file(&path).unwrap_err());
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("byte 15 (0xf6, line 2)"), "{msg}");
        assert!(msg.contains("Fix: save the file as UTF-8"), "{msg}");
    }

    #[test]
    fn a_long_prompt_file_is_read_up_to_the_cap_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.txt");
        // A 2-byte character straddles the cap.
        let mut text = "a".repeat(MAX_PROMPT_BYTES - 1);
        text.push_str(&"é".repeat(1000));
        std::fs::write(&path, &text).unwrap();
        let (read, note) = read_prompt_file(&path).unwrap();
        assert_eq!(read, "a".repeat(MAX_PROMPT_BYTES - 1));
        let note = note.unwrap();
        assert!(note.contains(&format!("is {} bytes", text.len())), "{note}");
        std::fs::write(&path, "a red fox\n").unwrap();
        assert_eq!(
            read_prompt_file(&path).unwrap(),
            ("a red fox\n".into(), None)
        );
    }
}
