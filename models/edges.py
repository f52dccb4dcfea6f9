"""Edge maps and control adherence, as speedscape defines them (the Python reference).

One definition for every Python user (the micro model's ControlNet training and evaluation, the
fixture scripts); speedscape's Rust (core/src/quality/edges.rs) is tested against fixtures made
with these functions and OpenCV.

- `canny(rgb)`: diffusers' ControlNet canny recipe, `cv2.Canny(image, 100, 200)` on the uint8
  RGB image (OpenCV takes the channel with the largest gradient per pixel, L1 magnitude, 3x3
  Sobel), as a bool map.
- `control_map(rgb)`: a control image read back as an edge map: luminance (ITU-R 601, as PIL's
  "L") above 127.
- `tolerance(h, w)`: 1 px below 256 px on the short side, 2 px from 256 (512x512 SD images).
- `edge_f1(pred, ref, tol)`: precision = share of predicted edge pixels with a reference edge
  pixel within Euclidean distance tol; recall = share of reference edge pixels with a predicted
  one within tol; F1 = 2PR / (P + R). Both maps empty: 1; one empty: 0. This is the usual
  tolerance-matched boundary F-score of edge-control evaluations, without the one-to-one
  assignment of BSDS's benchmark.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

LOW, HIGH = 100, 200


def canny(rgb: np.ndarray, low: int = LOW, high: int = HIGH) -> np.ndarray:
    import cv2

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return cv2.Canny(rgb, low, high) > 0


def control_map(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim == 2:
        lum = rgb
    else:
        # PIL's convert("L"): (R*299 + G*587 + B*114) / 1000, rounded
        lum = np.floor((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114) / 1000 + 0.5)
    return lum > 127


def tolerance(h: int, w: int) -> float:
    return 1.0 if min(h, w) < 256 else 2.0


def _within(edges: np.ndarray, of: np.ndarray, tol: float) -> np.ndarray:
    """For each pixel of `edges`, whether a pixel of `of` lies within `tol` (Euclidean)."""
    if not of.any():
        return np.zeros(edges.shape, bool)
    dist = ndimage.distance_transform_edt(~of)
    return (dist <= tol) & edges


def edge_f1(pred: np.ndarray, ref: np.ndarray, tol: float | None = None) -> dict:
    """Precision, recall and F1 of edge map `pred` against `ref` (bool maps of one shape)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    assert pred.shape == ref.shape, (pred.shape, ref.shape)
    if tol is None:
        tol = tolerance(*pred.shape)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_pred == 0 and n_ref == 0:
        return dict(precision=1.0, recall=1.0, f1=1.0, tolerance=tol)
    if n_pred == 0 or n_ref == 0:
        return dict(precision=0.0, recall=0.0, f1=0.0, tolerance=tol)
    precision = _within(pred, ref, tol).sum() / n_pred
    recall = _within(ref, pred, tol).sum() / n_ref
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return dict(precision=float(precision), recall=float(recall), f1=float(f1), tolerance=tol)


def adherence(image_rgb: np.ndarray, control_edges: np.ndarray, tol: float | None = None) -> float:
    """F1 of the generated image's Canny edges against the control edge map (`tol` px; the image
    size's default tolerance when None)."""
    return edge_f1(canny(image_rgb), control_edges, tol)["f1"]
