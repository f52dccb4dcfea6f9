//! Outputs: atomic file writes (temp file + rename), PNG / NPY images, timing summaries.

pub mod quality;
pub mod sheet;
pub mod table;

use std::io::Write;
use std::path::Path;

use color_eyre::eyre::{WrapErr, eyre};
use ndarray::{ArrayBase, Data, Dimension};
use ndarray_npy::WritableElement;

use crate::pipeline::RunReport;

/// Writes `path` through a temporary file in the same folder and a rename, so a reader never
/// sees half a file and an existing file survives a failed write.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> color_eyre::Result<()>,
) -> color_eyre::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(eyre!(
            "cannot write {}: folder {} does not exist\nFix: create it first or choose another path",
            path.display(),
            dir.display()
        ));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".speedscape-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .wrap_err_with(|| format!("cannot create a temporary file in {}", dir.display()))?;
    write(tmp.as_file_mut())?;
    tmp.as_file_mut().flush()?;
    tmp.as_file().sync_all().ok();
    tmp.persist(path).map_err(|e| {
        eyre!(
            "cannot move the finished file to {}: {}",
            path.display(),
            e.error
        )
    })?;
    Ok(())
}

/// Saves an RGB8 image as PNG, atomically.
pub fn save_png(path: &Path, img: &image::RgbImage) -> color_eyre::Result<()> {
    write_atomic(path, |f| {
        let mut buf = std::io::BufWriter::new(f);
        img.write_to(&mut buf, image::ImageFormat::Png)
            .wrap_err_with(|| format!("encoding PNG {}", path.display()))?;
        buf.flush()?;
        Ok(())
    })
}

/// Saves an array as `.npy`, atomically.
pub fn save_npy<S, D>(path: &Path, array: &ArrayBase<S, D>) -> color_eyre::Result<()>
where
    S: Data,
    S::Elem: WritableElement,
    D: Dimension,
{
    use ndarray_npy::WriteNpyExt;
    write_atomic(path, |f| {
        let mut buf = std::io::BufWriter::new(f);
        array
            .write_npy(&mut buf)
            .map_err(|e| eyre!("writing {}: {e}", path.display()))?;
        buf.flush()?;
        Ok(())
    })
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The human summary printed after `speedscape generate` (its warnings go to stderr apart).
pub fn summary(r: &RunReport) -> String {
    let t = &r.timings;
    let steps = t.unet.len().max(1) as f64;
    let mut out = format!(
        "{scheduler} {steps} steps, cfg {g}, seed {seed} ({rng}), unet {unet} ({label}), {w}×{h}\n\
         provider {prov}, ONNX Runtime {ver}\n\
         total {total:.1} ms  = text {text:.1} ms + unet {unet_ms:.1} ms ({per:.2} ms/step) + scheduler {sched:.2} ms + vae {vae:.1} ms\n",
        scheduler = r.scheduler,
        steps = r.steps,
        g = r.guidance,
        seed = r.seed,
        rng = r.rng,
        unet = r.unet,
        label = r.unet_label,
        w = r.width,
        h = r.height,
        prov = r.provider,
        ver = r.onnxruntime_version,
        total = ms(t.total),
        text = ms(t.text),
        unet_ms = ms(t.unet_total()),
        per = ms(t.unet_total()) / steps,
        sched = ms(t.scheduler_total()),
        vae = ms(t.vae),
    );
    if !r.load_ms.is_empty() {
        let parts: Vec<String> = r
            .load_ms
            .iter()
            .map(|(name, v)| format!("{name} {v:.1} ms"))
            .collect();
        out.push_str(&format!(
            "model load (not part of the run): {}\n",
            parts.join(", ")
        ));
    }
    if r.tiny_model {
        out.push_str("note: the embedded tiny model has random weights, so its images are noise-like by design\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        std::fs::write(&path, b"old").unwrap();
        let res = write_atomic(&path, |f| {
            f.write_all(b"half")?;
            Err(eyre!("encoder failed"))
        });
        assert!(res.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != "out.png")
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }

    #[test]
    fn a_missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("out.png");
        let err = write_atomic(&path, |_| Ok(())).unwrap_err();
        assert!(format!("{err}").contains("does not exist"));
    }
}
