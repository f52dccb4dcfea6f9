//! Saving an exercise's results from the TUI, behind a trait so the headless exporter's
//! `save_exercise` (report module) can replace [`FolderSaver`].

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::error::Fixable;
use crate::exercises::Exercise;
use crate::exercises::cheatsheet::{self, Answers, Approach, Constraint};
use crate::pipeline::RunReport;
use crate::report::table::TableRow;
use crate::sweep::headless::SweepOutcome;

/// What there is to save, per run (`None`: that run has not finished).
pub struct SaveRequest<'a> {
    pub exercise: &'a Exercise,
    pub rows: Vec<TableRow>,
    pub images: Vec<Option<&'a RgbImage>>,
    pub reports: Vec<Option<&'a RunReport>>,
    /// The user's answers to the exercise's questions.
    pub predictions: Vec<Option<f64>>,
}

pub trait Saver {
    /// Writes the results; returns the folder written.
    fn save_exercise(&self, request: &SaveRequest) -> color_eyre::Result<PathBuf>;
    /// Writes the cheat sheet with every verified scenario; returns the folder written.
    fn save_sheet(&self, answers: &Answers, verified: &[SheetRun]) -> color_eyre::Result<PathBuf>;
    /// Keeps the cheat-sheet answers; returns the file written.
    fn save_answers(&self, answers: &Answers) -> color_eyre::Result<PathBuf>;
    /// Writes the speed landscape's sweep as `speedscape sweep --out` does; returns the folder.
    fn save_sweep(&self, outcome: &SweepOutcome) -> color_eyre::Result<PathBuf>;
}

/// One scenario's verification, as saved with the cheat sheet.
pub struct SheetRun<'a> {
    pub key: char,
    pub choice: Approach,
    pub constraint: Constraint,
    pub request: SaveRequest<'a>,
}

/// Where the answers are kept: `cheatsheet.json` in the output folder.
pub fn answers_path(root: &Path) -> PathBuf {
    root.join("cheatsheet.json")
}

/// Writes a new folder under `root` with the same writer as the headless
/// `speedscape exercise --out` ([`crate::exercises::headless::save_exercise`]): one PNG per
/// finished run and `timings.json`, never overwriting anything.
pub struct FolderSaver {
    pub root: PathBuf,
}

impl Saver for FolderSaver {
    fn save_exercise(&self, req: &SaveRequest) -> color_eyre::Result<PathBuf> {
        let images: Vec<Option<RgbImage>> = req.images.iter().map(|i| i.cloned()).collect();
        let reports: Vec<Option<RunReport>> = req.reports.iter().map(|r| r.cloned()).collect();
        crate::exercises::headless::save_exercise(
            &self.root,
            req.exercise,
            &req.rows,
            &images,
            &reports,
            &req.predictions,
        )
    }

    fn save_sheet(&self, answers: &Answers, verified: &[SheetRun]) -> color_eyre::Result<PathBuf> {
        // The sheet writer takes owned images and reports (as the headless path has them).
        type Owned = (Vec<Option<RgbImage>>, Vec<Option<RunReport>>);
        let owned: Vec<Owned> = verified
            .iter()
            .map(|v| {
                (
                    v.request.images.iter().map(|i| i.cloned()).collect(),
                    v.request.reports.iter().map(|r| r.cloned()).collect(),
                )
            })
            .collect();
        let saved: Vec<cheatsheet::Saved> = verified
            .iter()
            .zip(&owned)
            .map(|(v, (images, reports))| cheatsheet::Saved {
                key: v.key,
                choice: v.choice,
                constraint: v.constraint,
                exercise: v.request.exercise,
                rows: &v.request.rows,
                images,
                reports,
            })
            .collect();
        cheatsheet::save(&self.root, answers, &saved)
    }

    fn save_sweep(&self, outcome: &SweepOutcome) -> color_eyre::Result<PathBuf> {
        crate::sweep::output::save_sweep(&self.root, outcome)
    }

    /// Never writes over a file that does not parse: that would lose the answers in it.
    fn save_answers(&self, answers: &Answers) -> color_eyre::Result<PathBuf> {
        let path = answers_path(&self.root);
        Answers::load(&path)?;
        crate::report::check_output_root(&self.root)?;
        std::fs::create_dir_all(&self.root).map_err(|e| {
            Fixable::new(
                format!(
                    "cannot create the output folder {}: {e}",
                    self.root.display()
                ),
                "choose a folder you can write to (--out DIR)",
            )
        })?;
        answers.save(&path)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exercises::default_exercises;

    #[test]
    fn answers_are_kept_but_never_written_over_a_damaged_file() {
        let root = tempfile::tempdir().unwrap();
        let saver = FolderSaver {
            root: root.path().join("out"),
        };
        let mut answers = Answers {
            format: 1,
            ..Answers::default()
        };
        answers.answers.insert('C', cheatsheet::Answer::default());
        let path = saver.save_answers(&answers).unwrap();
        assert_eq!(path, answers_path(&saver.root));
        assert_eq!(Answers::load(&path).unwrap(), answers);
        // Damaged by something else between two saves: refused, the file left as it is.
        std::fs::write(&path, "{\"format\": 1, \"ans").unwrap();
        let e = format!("{}", saver.save_answers(&answers).unwrap_err());
        assert!(
            e.contains("damaged") && e.contains("will not overwrite"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"format\": 1, \"ans"
        );
    }

    #[test]
    fn saves_finished_runs_into_a_new_folder_each_time() {
        let root = tempfile::tempdir().unwrap();
        let ex = &default_exercises()[0];
        let img = RgbImage::new(4, 4);
        let rep = super::super::fake::report(&ex.request(0, crate::rng::RngSource::TorchCpu));
        let req = SaveRequest {
            exercise: ex,
            rows: vec![TableRow::default(); 3],
            images: vec![Some(&img), None, None],
            reports: vec![Some(&rep), None, None],
            predictions: vec![Some(2.5), None],
        };
        let saver = FolderSaver {
            root: root.path().to_path_buf(),
        };
        let a = saver.save_exercise(&req).unwrap();
        let b = saver.save_exercise(&req).unwrap();
        assert_ne!(a, b, "a second save makes a new folder");
        for dir in [&a, &b] {
            assert_eq!(dir.parent(), Some(root.path()));
            let pngs = std::fs::read_dir(dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("png".as_ref()))
                .count();
            assert_eq!(pngs, 2, "the finished run's image and the contact sheet");
            assert!(dir.join("contact-sheet.png").is_file());
            assert!(dir.join("timings.json").is_file());
            let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
            assert!(md.contains("you said 2.5×"), "the TUI's prediction: {md}");
        }
    }
}
