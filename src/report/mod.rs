//! Outputs: atomic file writes (temp file + rename), PNG / NPY images, timing summaries.

mod error_text;
pub mod sheet;
pub mod table;

pub use error_text::describe_error;

use std::io::Write;
use std::path::Path;

use color_eyre::eyre::{WrapErr, eyre};
use ndarray::{ArrayBase, Data, Dimension};
use ndarray_npy::WritableElement;

use crate::error::Fixable;
use crate::pipeline::RunReport;

/// What a write does when its file already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (in one step: a reader sees the old file or the new one).
    Replace,
    /// Leave it and fail: what the user named must not be overwritten without `--force`.
    Refuse,
}

/// Writes `path` through a temporary file in the same folder and a rename, so a reader never
/// sees half a file and an existing file survives a failed write. Replaces an existing file.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> color_eyre::Result<()>,
) -> color_eyre::Result<()> {
    write_file(path, Existing::Replace, write)
}

/// [`write_atomic`] with a choice for an existing file. Whatever fails (a full disk, an encoder
/// error), nothing is left behind: no temporary file, and no new file at `path`.
pub fn write_file(
    path: &Path,
    existing: Existing,
    write: impl FnOnce(&mut dyn Write) -> color_eyre::Result<()>,
) -> color_eyre::Result<()> {
    let dir = parent_dir(path);
    check_folder(path, dir)?;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.is_file()
    {
        return Err(not_a_file(path));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".speedscape-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| folder_error(path, dir, e))?;
    // Every failure from here on drops `tmp`, which deletes the temporary file.
    let written = {
        let mut sink = fault::wrap(tmp.as_file_mut());
        write(&mut sink).and_then(|()| sink.flush().map_err(color_eyre::Report::new))
    };
    written
        .and_then(|()| {
            // A full disk can show only here (NFS, quotas); other fsync failures (a file system
            // without fsync) do not make the file any less written.
            match tmp.as_file().sync_all() {
                Err(e) if is_disk_full(&e) => Err(color_eyre::Report::new(e)),
                _ => Ok(()),
            }
        })
        .map_err(|e| disk_full_or(e, path))?;
    let persisted = match existing {
        Existing::Replace => tmp.persist(path),
        Existing::Refuse => tmp.persist_noclobber(path),
    };
    persisted.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            already_exists(path)
        } else {
            eyre!(Fixable::new(
                format!(
                    "cannot move the finished file to {}: {}",
                    path.display(),
                    e.error
                ),
                "choose a folder you can write to",
            ))
        }
    })?;
    Ok(())
}

/// Before a run: whether a file can be written at `path` (a new one unless `force`), so that
/// a run's result is not lost to a bad output path at its end. Creates nothing that stays.
pub fn check_output_file(path: &Path, force: bool) -> color_eyre::Result<()> {
    let dir = parent_dir(path);
    check_folder(path, dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(not_a_file(path)),
        Ok(_) if !force => return Err(already_exists(path)),
        _ => {}
    }
    probe(path, dir)
}

/// Before a run: whether a new folder can be made under `root` (created later if missing).
/// Creates nothing that stays.
pub fn check_output_root(root: &Path) -> color_eyre::Result<()> {
    let existing = root
        .ancestors()
        .find(|a| a.as_os_str().is_empty() || std::fs::metadata(a).is_ok())
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(eyre!(Fixable::new(
            format!(
                "cannot create the output folder {}: {} is a file, not a folder",
                root.display(),
                existing.display()
            ),
            format!(
                "choose an output folder whose parents are folders (e.g. --out speedscape-out), or move {} away",
                existing.display()
            ),
        )));
    }
    probe(root, existing)
}

/// The folder a file `path` goes into (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `dir` exists and is a folder; else an error saying which part of the path is wrong.
fn check_folder(path: &Path, dir: &Path) -> color_eyre::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(file) = dir.ancestors().find(|a| a.is_file()) {
        return Err(eyre!(Fixable::new(
            format!(
                "cannot write {}: {} is a file, not a folder",
                path.display(),
                file.display()
            ),
            format!(
                "choose a path in a folder (or move {} away)",
                file.display()
            ),
        )));
    }
    Err(eyre!(Fixable::new(
        format!(
            "cannot write {}: folder {} does not exist",
            path.display(),
            dir.display()
        ),
        format!(
            "create it first (mkdir -p {}) or choose another path",
            dir.display()
        ),
    )))
}

/// Creates and deletes a temporary file in `dir`: the only sure test that files can be made
/// there (permissions, a read-only file system, a full disk).
fn probe(target: &Path, dir: &Path) -> color_eyre::Result<()> {
    tempfile::Builder::new()
        .prefix(".speedscape-probe-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| folder_error(target, dir, e))
}

/// Why no file could be created in `dir`, with the fix.
fn folder_error(target: &Path, dir: &Path, e: std::io::Error) -> color_eyre::Report {
    use std::io::ErrorKind;
    let why = match e.kind() {
        _ if is_disk_full(&e) => return disk_full(target, dir, &e),
        ErrorKind::PermissionDenied => {
            format!("no permission to create files in {}", dir.display())
        }
        ErrorKind::ReadOnlyFilesystem => format!("{} is on a read-only file system", dir.display()),
        ErrorKind::NotADirectory => format!("{} is not a folder", dir.display()),
        _ => format!("cannot create a file in {} ({e})", dir.display()),
    };
    eyre!(Fixable::new(
        format!("cannot write {}: {why}", target.display()),
        "choose a folder you can write to",
    ))
}

fn not_a_file(path: &Path) -> color_eyre::Report {
    eyre!(Fixable::new(
        format!(
            "cannot write {}: it exists and is not a regular file (a folder, a device or a link); speedscape replaces only files, and only with --force",
            path.display()
        ),
        "name a new file",
    ))
}

fn already_exists(path: &Path) -> color_eyre::Report {
    eyre!(Fixable::new(
        format!(
            "{} already exists; speedscape does not overwrite it",
            path.display()
        ),
        "choose a new name, or pass --force to replace it",
    ))
}

/// ENOSPC or EDQUOT.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

fn disk_full(target: &Path, dir: &Path, e: &std::io::Error) -> color_eyre::Report {
    let full = DiskFull {
        path: target.to_path_buf(),
        dir: dir.to_path_buf(),
        error: e.to_string(),
    };
    eyre!(
        Fixable::new(
            format!(
                "disk full while writing {} ({}); nothing was written there",
                full.path.display(),
                full.error
            ),
            format!(
                "free space on the disk of {} (see df -h {}), or write to another disk",
                full.dir.display(),
                full.dir.display()
            ),
        )
        .with_detail(full)
    )
}

/// A write failed for want of space (ENOSPC, or EDQUOT: a quota); nothing was left behind.
/// The error's detail: `crate::error::detail::<DiskFull>(&report)` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFull {
    /// The file (or folder) that was being written.
    pub path: std::path::PathBuf,
    /// The folder whose disk is full.
    pub dir: std::path::PathBuf,
    /// The system's words.
    pub error: String,
}

/// A failed write as the user reads it: "disk full" when an ENOSPC/EDQUOT is in its chain.
fn disk_full_or(err: color_eyre::Report, path: &Path) -> color_eyre::Report {
    let full = err
        .chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .find(|e| is_disk_full(e));
    let io = err
        .chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some());
    match full {
        Some(e) => disk_full(path, parent_dir(path), e),
        None if io => {
            let dir = parent_dir(path).display();
            eyre!(
                Fixable::new(
                    format!("cannot write {}; nothing was written there", path.display()),
                    format!(
                        "check the disk of {dir} (free space, quota, a file-size limit: ulimit -f) and try again, or write elsewhere"
                    ),
                )
                .with_source(err)
            )
        }
        None => err.wrap_err(format!("writing {}", path.display())),
    }
}

/// Test-only failure injection: a write that fails with ENOSPC after a number of bytes.
#[cfg(not(test))]
mod fault {
    pub fn wrap(f: &mut std::fs::File) -> &mut std::fs::File {
        f
    }
}

#[cfg(test)]
pub(crate) mod fault {
    use std::cell::Cell;
    use std::io::Write;

    thread_local! {
        /// Bytes this thread may still write before every write fails with ENOSPC.
        static LEFT: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// Until the guard drops, writes on this thread fail with ENOSPC after `bytes` bytes (in
    /// total, across files), as a disk that fills up would.
    pub fn disk_full_after(bytes: u64) -> Guard {
        LEFT.with(|l| l.set(Some(bytes)));
        Guard
    }

    pub struct Guard;

    impl Drop for Guard {
        fn drop(&mut self) {
            LEFT.with(|l| l.set(None));
        }
    }

    pub struct Faulty<'a>(&'a mut std::fs::File);

    pub fn wrap(f: &mut std::fs::File) -> Faulty<'_> {
        Faulty(f)
    }

    impl Write for Faulty<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let Some(left) = LEFT.with(Cell::get) else {
                return self.0.write(buf);
            };
            if left == 0 {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let n = buf.len().min(left as usize);
            let written = self.0.write(&buf[..n])?;
            LEFT.with(|l| l.set(Some(left - written as u64)));
            Ok(written)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
}

/// Saves an RGB8 image as PNG, atomically, replacing an existing file.
pub fn save_png(path: &Path, img: &image::RgbImage) -> color_eyre::Result<()> {
    save_png_as(path, img, Existing::Replace)
}

/// Saves an RGB8 image as PNG, atomically.
pub fn save_png_as(
    path: &Path,
    img: &image::RgbImage,
    existing: Existing,
) -> color_eyre::Result<()> {
    // Encoded in memory first: the png crate turns write errors into untyped ones, and a full
    // disk must be recognised as such.
    let png = encode_png(img).wrap_err_with(|| format!("encoding PNG {}", path.display()))?;
    write_file(path, existing, |f| {
        f.write_all(&png)?;
        Ok(())
    })
}

/// An RGB8 image as PNG bytes (what `image`'s `write_to(…, Png)` writes).
pub fn encode_png(img: &image::RgbImage) -> color_eyre::Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(png)
}

/// Saves an array as `.npy`, atomically, replacing an existing file.
pub fn save_npy<S, D>(path: &Path, array: &ArrayBase<S, D>) -> color_eyre::Result<()>
where
    S: Data,
    S::Elem: WritableElement,
    D: Dimension,
{
    save_npy_as(path, array, Existing::Replace)
}

/// Saves an array as `.npy`, atomically.
pub fn save_npy_as<S, D>(
    path: &Path,
    array: &ArrayBase<S, D>,
    existing: Existing,
) -> color_eyre::Result<()>
where
    S: Data,
    S::Elem: WritableElement,
    D: Dimension,
{
    use ndarray_npy::{WriteNpyError, WriteNpyExt};
    write_file(path, existing, |f| {
        let mut buf = std::io::BufWriter::new(f);
        array.write_npy(&mut buf).map_err(|e| match e {
            WriteNpyError::Io(io) => color_eyre::Report::new(io),
            other => eyre!("writing {}: {other}", path.display()),
        })?;
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
        unet = r.adapters.iter().fold(r.unet.clone(), |s, a| format!(
            "{s} + {}×{}",
            a.name, a.weight
        )),
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
    for a in &r.adapters {
        out.push_str(&format!(
            "LoRA {}×{} ({}, {}): {} sha256 {}\n",
            a.name,
            a.weight,
            a.format,
            a.components.join(" + "),
            a.file,
            a.sha256
        ));
    }
    if let Some(c) = &r.control {
        out.push_str(&control_line(c, t.controlnet.len()));
    }
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

/// The summary's line about a run's ControlNet: which, on what, how strongly, its time per
/// step (over `steps` calls) apart from the UNet's, and the adherence (`—` when not measured).
fn control_line(c: &crate::pipeline::control::ControlReport, steps: usize) -> String {
    let per_step = if steps > 0 {
        format!("{:.2} ms/step", ms(c.time) / steps as f64)
    } else {
        table::NOT_APPLICABLE.to_string()
    };
    format!(
        "{}: controlnet {:.1} ms ({per_step}), edge F1 {}\n",
        table::control_label(c),
        ms(c.time),
        table::format_adherence(Some(c.adherence)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_the_controlnet_its_time_per_step_and_the_adherence() {
        use crate::pipeline::control::{ControlPreprocess, ControlReport};
        let mut c = ControlReport {
            name: "edge".into(),
            image: "edges.png".into(),
            preprocess: ControlPreprocess::Canny,
            scale: 0.5,
            adherence: 0.8125,
            time: std::time::Duration::from_millis(32),
        };
        assert_eq!(
            control_line(&c, 4),
            "ControlNet edge on edges.png (preprocess canny, scale 0.5): controlnet 32.0 ms (8.00 ms/step), edge F1 0.8125\n"
        );
        c.adherence = f64::NAN;
        assert!(
            control_line(&c, 4).ends_with("edge F1 —\n"),
            "{}",
            control_line(&c, 4)
        );
    }

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

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn noise_image() -> image::RgbImage {
        image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 37 + y * 11) as u8, (x * y) as u8, (x ^ y) as u8])
        })
    }

    #[test]
    fn a_disk_that_fills_up_mid_png_leaves_no_file_and_says_disk_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        let png = encode_png(&noise_image()).unwrap();
        assert!(png.len() > 2000, "the PNG is larger than what fits");
        let err = {
            let _full = fault::disk_full_after(1000);
            save_png_as(&path, &noise_image(), Existing::Refuse).unwrap_err()
        };
        let full = crate::error::detail::<DiskFull>(&err).expect("a DiskFull error");
        assert_eq!(full.path, path);
        assert_eq!(
            err.to_string(),
            format!(
                "disk full while writing {} (No space left on device (os error 28)); nothing was written there\nFix: free space on the disk of {d} (see df -h {d}), or write to another disk",
                path.display(),
                d = dir.path().display()
            )
        );
        assert!(
            files_in(dir.path()).is_empty(),
            "{:?}",
            files_in(dir.path())
        );
        // With room again, the same call writes the whole file.
        save_png_as(&path, &noise_image(), Existing::Refuse).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), png);
    }

    #[test]
    fn a_disk_that_fills_up_while_replacing_a_report_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.md");
        std::fs::write(&path, "the old report").unwrap();
        let err = {
            let _full = fault::disk_full_after(5);
            write_atomic(&path, |f| {
                f.write_all("a new report, longer than five bytes".as_bytes())?;
                Ok(())
            })
            .unwrap_err()
        };
        assert!(
            err.to_string().starts_with("disk full while writing "),
            "{err}"
        );
        assert!(err.to_string().contains("\nFix: free space"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "the old report");
        assert_eq!(files_in(dir.path()), vec!["report.md"]);
    }

    #[test]
    fn a_disk_that_fills_up_mid_npy_says_disk_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw.npy");
        let err = {
            let _full = fault::disk_full_after(200);
            save_npy_as(
                &path,
                &ndarray::Array2::<f32>::zeros((64, 64)),
                Existing::Refuse,
            )
            .unwrap_err()
        };
        assert!(crate::error::detail::<DiskFull>(&err).is_some(), "{err}");
        assert!(files_in(dir.path()).is_empty());
    }

    #[test]
    fn other_write_errors_name_the_file_and_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let err = write_atomic(&path, |_| {
            Err(std::io::Error::from_raw_os_error(27).into()) // EFBIG
        })
        .unwrap_err();
        let text = describe_error(&err);
        assert!(
            text.starts_with(&format!(
                "cannot write {}; nothing was written there\n  caused by: File too large",
                path.display()
            )),
            "{text}"
        );
        assert!(text.contains("\nFix: check the disk of"), "{text}");
        assert!(files_in(dir.path()).is_empty());
    }

    #[test]
    fn refuse_keeps_an_existing_file_and_names_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        std::fs::write(&path, b"mine").unwrap();
        let err = save_png_as(&path, &noise_image(), Existing::Refuse).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} already exists; speedscape does not overwrite it\nFix: choose a new name, or pass --force to replace it",
                path.display()
            )
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
        assert_eq!(files_in(dir.path()), vec!["out.png"]);
        save_png_as(&path, &noise_image(), Existing::Replace).unwrap();
        assert_ne!(std::fs::read(&path).unwrap(), b"mine");
    }

    #[test]
    fn check_output_file_refuses_what_it_must_not_touch_and_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("a.png");
        std::fs::write(&existing, b"mine").unwrap();
        let err = check_output_file(&existing, false).unwrap_err().to_string();
        assert!(
            err.contains("already exists") && err.contains("--force"),
            "{err}"
        );
        check_output_file(&existing, true).unwrap();
        check_output_file(&dir.path().join("new.png"), false).unwrap();
        // A folder (or a device such as /dev/full) is never replaced, even with --force.
        let err = check_output_file(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        let err = check_output_file(Path::new("/dev/full"), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/dev/full: it exists and is not a regular file"),
            "{err}"
        );
        // A parent that is a file: ENOTDIR, even for root.
        let under = existing.join("sub/x.png");
        let err = check_output_file(&under, false).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot write {}: {} is a file, not a folder\nFix: choose a path in a folder (or move {} away)",
                under.display(),
                existing.display(),
                existing.display()
            )
        );
        let missing = dir.path().join("no/such/x.png");
        let err = check_output_file(&missing, false).unwrap_err().to_string();
        assert!(
            err.contains("does not exist") && err.contains("mkdir -p"),
            "{err}"
        );
        assert_eq!(
            files_in(dir.path()),
            vec!["a.png"],
            "the checks leave nothing"
        );
    }

    #[test]
    fn check_output_root_accepts_a_new_folder_and_names_a_file_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        check_output_root(&dir.path().join("new/deeper")).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = check_output_root(&file.join("out"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "cannot create the output folder {}: {} is a file, not a folder\nFix: ",
                file.join("out").display(),
                file.display()
            )),
            "{err}"
        );
        assert_eq!(files_in(dir.path()), vec!["f"], "the checks leave nothing");
    }
}
