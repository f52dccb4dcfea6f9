//! The live timing table of an exercise: one row per run, filled in from worker events while the
//! run goes (partial numbers marked) and from its report when it ends. The TUI draws these rows;
//! the headless `speedscape exercise` prints them with [`format_table`].

use serde::Serialize;

/// One row, as displayed. Times in milliseconds; `None` where not known yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TableRow {
    pub label: String,
    pub scheduler: String,
    pub steps: usize,
    pub cfg: f32,
    pub unet: String,
    /// Steps done so far (== `steps` when finished).
    pub steps_done: usize,
    pub total_ms: Option<f64>,
    pub text_ms: Option<f64>,
    pub unet_ms: Option<f64>,
    pub unet_ms_per_step: Option<f64>,
    pub vae_ms: Option<f64>,
    /// Denoising steps per second (UNet + scheduler time only).
    pub its: Option<f64>,
    /// Baseline total time ÷ this run's total time.
    pub speedup: Option<f64>,
    pub is_baseline: bool,
    /// The run is still going: the numbers so far are partial.
    pub partial: bool,
    pub state: RowState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    #[default]
    Pending,
    Loading,
    Running,
    Finished,
    Cancelled,
    Failed,
}
