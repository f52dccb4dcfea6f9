//! The NVIDIA GPU as `nvidia-smi` reports it: name, memory, driver, and the CUDA version the
//! driver supports. Used for memory budgets and for what reports say about the device.

use std::process::Command;

use serde::Serialize;

/// One GPU's facts from `nvidia-smi` (the first GPU when there are several).
#[derive(Debug, Clone, Serialize)]
pub struct GpuInfo {
    /// The GPU's product name, e.g. "NVIDIA H200".
    pub name: String,
    /// Total memory as `nvidia-smi` prints it, e.g. "143771 MiB".
    pub memory: String,
    /// The driver version.
    pub driver: String,
    /// Highest CUDA version the driver supports, from `nvidia-smi`.
    pub cuda: Option<String>,
}

/// Asks `nvidia-smi` for the first GPU; `None` when there is no NVIDIA driver or it fails.
pub fn query_gpu() -> Option<GpuInfo> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?;
    let mut parts = first.split(',').map(|s| s.trim().to_string());
    let (name, memory, driver) = (parts.next()?, parts.next()?, parts.next()?);
    let header = Command::new("nvidia-smi").output().ok();
    let cuda = header.and_then(|h| {
        let t = String::from_utf8_lossy(&h.stdout).to_string();
        t.split("CUDA Version:")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_string)
    });
    Some(GpuInfo {
        name,
        memory,
        driver,
        cuda,
    })
}
