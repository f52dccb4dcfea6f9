//! Saving an exercise's results from the TUI, behind a trait so the headless exporter's
//! `save_exercise` (report module) can replace [`FolderSaver`].

use std::path::PathBuf;

use color_eyre::eyre::WrapErr;
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
}

pub trait Saver {
    /// Writes the results; returns the folder written.
    fn save_exercise(&self, request: &SaveRequest) -> color_eyre::Result<PathBuf>;
}

/// Writes `<root>/exercise-N[-k]/`: `run-i.png` per finished run, `timings.json` (the table's
/// rows) and `reports.json` (every finished run's report). Never overwrites: a taken folder
/// name gets the next `-k`.
pub struct FolderSaver {
    pub root: PathBuf,
}

impl Saver for FolderSaver {
    fn save_exercise(&self, req: &SaveRequest) -> color_eyre::Result<PathBuf> {
        std::fs::create_dir_all(&self.root)
            .wrap_err_with(|| format!("creating {}", self.root.display()))?;
        let n = req.exercise.number;
        let dir = (1..)
            .map(|k| {
                let name = if k == 1 {
                    format!("exercise-{n}")
                } else {
                    format!("exercise-{n}-{k}")
                };
                self.root.join(name)
            })
            .find(|d| !d.exists())
            .expect("an unused folder name");
        std::fs::create_dir(&dir).wrap_err_with(|| format!("creating {}", dir.display()))?;
        for (i, img) in req.images.iter().enumerate() {
            if let Some(img) = img {
                crate::report::save_png(&dir.join(format!("run-{}.png", i + 1)), img)?;
            }
        }
        std::fs::write(dir.join("timings.json"), json(&req.rows)?)
            .wrap_err_with(|| format!("writing {}", dir.display()))?;
        let reports: Vec<&RunReport> = req.reports.iter().flatten().copied().collect();
        std::fs::write(dir.join("reports.json"), json(&reports)?)
            .wrap_err_with(|| format!("writing {}", dir.display()))?;
        Ok(dir)
    }
}

fn json<T: serde::Serialize>(value: &T) -> color_eyre::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
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
        };
        let saver = FolderSaver {
            root: root.path().to_path_buf(),
        };
        let a = saver.save_exercise(&req).unwrap();
        let b = saver.save_exercise(&req).unwrap();
        assert_eq!(a, root.path().join("exercise-1"));
        assert_eq!(b, root.path().join("exercise-1-2"));
        assert!(a.join("run-1.png").is_file());
        assert!(!a.join("run-2.png").exists());
        let rows: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.join("timings.json")).unwrap())
                .unwrap();
        assert_eq!(rows.as_array().unwrap().len(), 3);
        let reps: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(a.join("reports.json")).unwrap())
                .unwrap();
        assert_eq!(reps.as_array().unwrap().len(), 1);
    }
}
