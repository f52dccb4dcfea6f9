//! Errors that keep their parts: what went wrong (the cause) and what the user can do about it
//! (the fix) are fields of [`Fixable`], not text appended to a message and parsed back out.
//!
//! A [`Fixable`] displays as `"{cause}\nFix: {fix}"`, so every message users read (an error
//! report, a failed run's text) reads as it always has; [`parts`] walks an [`eyre::Report`]'s
//! chain and gives each cause's text and the fixes, found by type (never by looking for "Fix:"
//! in text), each fix once.
//!
//! An error that code must recognise (a full disk, a NaN in a run) is a [`Fixable`] with a
//! typed detail ([`Fixable::with_detail`]), found again with [`detail`].

use std::any::Any;
use std::error::Error;
use std::fmt;

/// An error that says what the user can do about it.
///
/// Build one with [`Fixable::new`] (then `bail!(…)`, `Err(….into())` or `?` turn it into an
/// [`eyre::Report`]), or from another error with [`FixErr::fix_err`], which keeps that error
/// as the source, as `wrap_err` does.
pub struct Fixable {
    cause: String,
    fix: String,
    source: Option<eyre::Report>,
    /// What code may need to know besides the text (never shown).
    detail: Option<Box<dyn Any + Send + Sync>>,
}

impl Fixable {
    /// An error saying `cause` (what went wrong, possibly over several lines) and `fix` (what
    /// to do, one line, without the "Fix: " that the message puts before it).
    pub fn new(cause: impl Into<String>, fix: impl Into<String>) -> Self {
        Fixable {
            cause: cause.into(),
            fix: fix.into(),
            source: None,
            detail: None,
        }
    }

    /// The same error caused by `source` (kept as its source, as `wrap_err` keeps the error it
    /// wraps): a report's causes then read this error, then `source`'s chain.
    pub fn with_source(mut self, source: impl Into<eyre::Report>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The same error carrying `detail` for code to find with [`Fixable::detail`] or [`detail`]
    /// (which file a full disk stopped, which tensor went NaN); the message does not change.
    pub fn with_detail<D: Any + Send + Sync>(mut self, detail: D) -> Self {
        self.detail = Some(Box::new(detail));
        self
    }

    /// The detail of type `D`, if this error carries one.
    pub fn detail<D: Any>(&self) -> Option<&D> {
        self.detail.as_deref().and_then(|d| d.downcast_ref())
    }

    /// What went wrong.
    pub fn cause(&self) -> &str {
        &self.cause
    }

    /// What the user can do about it, without the "Fix: " prefix.
    pub fn fix(&self) -> &str {
        &self.fix
    }

    /// The same error with `prefix` (`"exercise 1: run \"LCM 4\": "`) before its cause.
    pub fn prefixed(mut self, prefix: impl fmt::Display) -> Self {
        self.cause = format!("{prefix}{}", self.cause);
        self
    }
}

impl fmt::Debug for Fixable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixable")
            .field("cause", &self.cause)
            .field("fix", &self.fix)
            .field("source", &self.source)
            .field("detail", &self.detail.is_some())
            .finish()
    }
}

impl fmt::Display for Fixable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\nFix: {}", self.cause, self.fix)
    }
}

impl Error for Fixable {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        // A report derefs to its own first error (not a wrapper), so a Fixable inside is still
        // found by `downcast_ref` when the chain is walked.
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// `report`'s message after `prefix`, as one error: a [`Fixable`] keeps its fix (and source)
/// apart, any other error becomes the text `"{prefix}{report}"` (its outermost message).
pub fn prefixed(prefix: impl fmt::Display, report: eyre::Report) -> eyre::Report {
    // Only the outermost error: `Report::downcast` alone would also find a Fixable under
    // `wrap_err` layers, and drop them.
    if !(*report).is::<Fixable>() {
        return eyre::eyre!("{prefix}{report}");
    }
    match report.downcast::<Fixable>() {
        Ok(fixable) => eyre::Report::new(fixable.prefixed(prefix)),
        Err(report) => eyre::eyre!("{prefix}{report}"),
    }
}

/// The first detail of type `D` that a [`Fixable`] in `report`'s chain carries.
pub fn detail<D: Any>(report: &eyre::Report) -> Option<&D> {
    report
        .chain()
        .find_map(|e| e.downcast_ref::<Fixable>()?.detail())
}

/// Adds a cause and its fix to a `Result`'s error, keeping that error as the source (the way
/// `wrap_err` does): `file.read().fix_err("cannot read x", "check the disk")?`.
pub trait FixErr<T> {
    /// The error becomes the source of a [`Fixable`] with this cause and fix.
    fn fix_err(self, cause: impl Into<String>, fix: impl Into<String>) -> eyre::Result<T>;

    /// As [`FixErr::fix_err`], with the cause and the fix computed only on error.
    fn fix_err_with<C, F>(self, parts: impl FnOnce() -> (C, F)) -> eyre::Result<T>
    where
        C: Into<String>,
        F: Into<String>;
}

impl<T, E: Into<eyre::Report>> FixErr<T> for Result<T, E> {
    fn fix_err(self, cause: impl Into<String>, fix: impl Into<String>) -> eyre::Result<T> {
        self.fix_err_with(|| (cause, fix))
    }

    fn fix_err_with<C, F>(self, parts: impl FnOnce() -> (C, F)) -> eyre::Result<T>
    where
        C: Into<String>,
        F: Into<String>,
    {
        self.map_err(|e| {
            let (cause, fix) = parts();
            eyre::Report::new(Fixable::new(cause, fix).with_source(e))
        })
    }
}

/// An error's parts as the user should read them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parts {
    /// Each error of the chain, outermost first: a [`Fixable`]'s cause, any other error's
    /// whole text (which may span several lines).
    pub causes: Vec<String>,
    /// The fixes of the chain's [`Fixable`]s, outermost first, each once, without "Fix: ".
    pub fixes: Vec<String>,
}

/// Walks `report`'s chain: the causes in order, and the fixes that its [`Fixable`] errors
/// carry, de-duplicated. Text is never searched for "Fix:": a cause that merely mentions it
/// stays a cause.
pub fn parts(report: &eyre::Report) -> Parts {
    let mut parts = Parts::default();
    for error in report.chain() {
        match error.downcast_ref::<Fixable>() {
            Some(fixable) => {
                parts.causes.push(fixable.cause.clone());
                if !parts.fixes.contains(&fixable.fix) {
                    parts.fixes.push(fixable.fix.clone());
                }
            }
            None => parts.causes.push(error.to_string()),
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use eyre::{WrapErr, bail};

    fn missing_unet() -> eyre::Result<()> {
        bail!(Fixable::new(
            "no unet_lcm folder",
            "export the model with its LoRA variants"
        ))
    }

    #[test]
    fn a_fixable_displays_as_its_cause_then_its_fix_line() {
        let error = Fixable::new("no such file\nSearched: /a, /b", "export the model");
        assert_eq!(
            error.to_string(),
            "no such file\nSearched: /a, /b\nFix: export the model"
        );
        let report = eyre::Report::new(Fixable::new("a", "b"));
        assert_eq!(format!("{report}"), "a\nFix: b");
    }

    #[test]
    fn a_fix_survives_wrap_err_layers_and_is_listed_once() {
        let report = missing_unet()
            .wrap_err("loading the variant lcm")
            .fix_err(
                "preparing exercise 2",
                "export the model with its LoRA variants",
            )
            .wrap_err("running exercise 2")
            .unwrap_err();
        assert_eq!(
            parts(&report),
            Parts {
                causes: vec![
                    "running exercise 2".into(),
                    "preparing exercise 2".into(),
                    "loading the variant lcm".into(),
                    "no unet_lcm folder".into(),
                ],
                fixes: vec!["export the model with its LoRA variants".into()],
            }
        );
    }

    #[test]
    fn two_different_fixes_are_both_listed_outermost_first() {
        let io = std::fs::read("/nonexistent/speedscape/error-test").map(|_| ());
        let report = io
            .fix_err_with(|| ("cannot read the latents", "pass an existing .npy file"))
            .fix_err("generating", "check the command line")
            .unwrap_err();
        let p = parts(&report);
        assert_eq!(
            p.fixes,
            ["check the command line", "pass an existing .npy file"]
        );
        assert_eq!(p.causes.len(), 3, "{p:?}");
        assert_eq!(p.causes[..2], ["generating", "cannot read the latents"]);
        // The I/O error is kept as the source, in its own words.
        assert!(
            report
                .chain()
                .nth(2)
                .is_some_and(|e| e.downcast_ref::<std::io::Error>().is_some()),
            "{p:?}"
        );
    }

    #[test]
    fn a_prefix_goes_before_the_cause_and_the_fix_stays_apart() {
        let report = prefixed("exercise 1: ", missing_unet().unwrap_err());
        assert_eq!(
            report.to_string(),
            "exercise 1: no unet_lcm folder\nFix: export the model with its LoRA variants"
        );
        assert_eq!(
            parts(&report).fixes,
            ["export the model with its LoRA variants"]
        );
        let plain = prefixed("exercise 1: ", eyre::eyre!("no such file"));
        assert_eq!(plain.to_string(), "exercise 1: no such file");
        assert!(parts(&plain).fixes.is_empty());
        // A wrapped Fixable is not the outermost error: the wrapper's text is what is prefixed.
        let wrapped = prefixed(
            "exercise 1: ",
            missing_unet().wrap_err("loading lcm").unwrap_err(),
        );
        assert_eq!(wrapped.to_string(), "exercise 1: loading lcm");
    }

    #[test]
    fn a_detail_is_found_under_wrap_err_layers_and_changes_no_text() {
        #[derive(Debug, PartialEq)]
        struct Full(u32);
        let plain = Fixable::new("disk full", "free space").to_string();
        let report = Err::<(), _>(Fixable::new("disk full", "free space").with_detail(Full(28)))
            .wrap_err("saving the sheet")
            .unwrap_err();
        assert_eq!(detail::<Full>(&report), Some(&Full(28)));
        assert_eq!(detail::<String>(&report), None);
        assert_eq!(report.chain().nth(1).unwrap().to_string(), plain);
        assert!(detail::<Full>(&eyre::eyre!("disk full")).is_none());
    }

    #[test]
    fn a_cause_that_mentions_fix_is_not_taken_for_a_fix() {
        // An error whose own text has a line beginning "Fix:" (here ONNX Runtime's, quoted):
        // the old reader split every cause's text into lines and took such a line for a fix.
        let quoted = "ONNX Runtime said:\nFix: the graph at node 3";
        let old_reading: Vec<&str> = quoted
            .lines()
            .filter(|l| l.trim_start().starts_with("Fix:"))
            .collect();
        assert_eq!(old_reading, ["Fix: the graph at node 3"]);

        let report = Err::<(), _>(eyre::eyre!(quoted))
            .wrap_err("loading the UNet")
            .unwrap_err();
        let p = parts(&report);
        assert!(p.fixes.is_empty(), "{p:?}");
        assert_eq!(p.causes, ["loading the UNet", quoted]);

        // In a Fixable's cause, too: only its fix field is a fix.
        let report = eyre::Report::new(Fixable::new(quoted, "re-export the model"));
        assert_eq!(
            parts(&report),
            Parts {
                causes: vec![quoted.into()],
                fixes: vec!["re-export the model".into()],
            }
        );
    }
}
