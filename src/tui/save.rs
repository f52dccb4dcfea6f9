//! Saving an exercise's results from the TUI, behind a trait so the headless exporter's
//! `save_exercise` (report module) can replace [`FolderSaver`].

use std::path::PathBuf;

use image::RgbImage;

use crate::exercises::Exercise;
use crate::pipeline::RunReport;
use crate::report::table::TableRow;

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exercises::default_exercises;

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
