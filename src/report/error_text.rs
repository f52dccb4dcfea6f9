//! An error as the user reads it (the TUI's run panels, the worker's `Failed` events, reports):
//! its causes line by line, then the fixes of the chain's typed errors, without terminal colours.

/// An error as the user should read it: each cause on its own line, then the fixes of the
/// chain's [`Fixable`](crate::error::Fixable) errors (each once, as `Fix:` lines), no terminal colours.
pub fn describe_error(err: &color_eyre::Report) -> String {
    let parts = crate::error::parts(err);
    let mut lines: Vec<String> = Vec::new();
    for (i, cause) in parts.causes.iter().enumerate() {
        let text = strip_ansi(cause);
        for (j, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            } else if i > 0 && j == 0 {
                lines.push(format!("  caused by: {line}"));
            } else if i > 0 {
                lines.push(format!("    {line}"));
            } else {
                lines.push(line.to_string());
            }
        }
    }
    lines.extend(parts.fixes.iter().map(|fix| {
        format!("Fix: {}", strip_ansi(fix).trim())
            .trim_end()
            .to_string()
    }));
    lines.join("\n")
}

/// Removes ANSI escape sequences (CSI `ESC [ … final byte`, and lone `ESC x`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Fixable;
    use color_eyre::eyre::{WrapErr, eyre};

    #[test]
    fn an_error_chain_reads_as_causes_with_the_fix_last_and_no_colours() {
        let inner: color_eyre::Result<()> = Err(eyre!(Fixable::new(
            "\u{1b}[31mno such file\u{1b}[0m",
            "export the model"
        )));
        let err = inner.wrap_err("loading the UNet").unwrap_err();
        assert_eq!(
            describe_error(&err),
            "loading the UNet\n  caused by: no such file\nFix: export the model"
        );
    }

    #[test]
    fn only_the_typed_fixes_go_last_once_each_and_a_quoted_fix_line_stays_with_its_cause() {
        use crate::error::FixErr;
        // ONNX Runtime's own words may hold a line that begins "Fix:"; it is a cause's text.
        let quoted: color_eyre::Result<()> = Err(eyre!("ONNX Runtime said:\nFix: node 3"));
        let err = quoted
            .fix_err("loading the UNet", "re-export the model")
            .fix_err("running exercise 2", "re-export the model")
            .unwrap_err();
        assert_eq!(
            describe_error(&err),
            "running exercise 2\n  caused by: loading the UNet\n  caused by: ONNX Runtime said:\n    \
             Fix: node 3\nFix: re-export the model"
        );
    }
}
