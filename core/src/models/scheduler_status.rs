//! Is a folder's `scheduler_config.json` SD v1.5's original, or one re-saved by diffusers?
//!
//! SD v1.5's original has no `timestep_spacing`; optimum's export and any diffusers
//! `save_pretrained` rewrite it with `"timestep_spacing": "leading"` (and other keys), which
//! changes the schedules: DPM-Solver++ 4 steps runs at t = 801, 601, 401, 201 instead of
//! 999, 749, 500, 250. speedscape obeys the file unless `model.scheduler_config = "sd15"`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::SD15_SCHEDULER_CONFIG;
use crate::error::Fixable;
use crate::schedulers::{self, SchedulerConfig, SchedulerKind, SchedulerOptions};

/// Which scheduler config a model uses (config.toml `model.scheduler_config`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerConfigSource {
    /// The folder's `scheduler/scheduler_config.json`, as written.
    #[default]
    File,
    /// SD v1.5's original, bundled in speedscape.
    Sd15,
}

/// What a scheduler config is, compared with SD v1.5's original.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum SchedulerConfigStatus {
    /// Equal to SD v1.5's in every key it has.
    Original,
    /// SD v1.5's values, plus keys diffusers adds when it saves a config.
    Resaved {
        /// `_diffusers_version` of the file.
        diffusers_version: Option<String>,
        /// The `timestep_spacing` it spells out, if any.
        timestep_spacing: Option<String>,
        /// Keys SD v1.5's original does not have.
        added: Vec<String>,
    },
    /// Another model's config.
    Other {
        /// The keys whose values differ from SD v1.5's (`beta_end`), or that it lacks
        /// (`beta_end (missing)`).
        differing: Vec<String>,
    },
}

/// Keys a diffusers save adds to SD v1.5's PNDM config, with the value that keeps SD v1.5's
/// meaning (`None`: any value; the key is reported).
const ADDED_BY_DIFFUSERS: [(&str, Option<&str>); 2] = [
    ("timestep_spacing", None),
    ("prediction_type", Some("epsilon")),
];

fn sd15() -> Map<String, Value> {
    match serde_json::from_str(SD15_SCHEDULER_CONFIG) {
        Ok(Value::Object(m)) => m,
        _ => unreachable!("SD15_SCHEDULER_CONFIG is a JSON object"),
    }
}

/// Numbers compare as numbers (`0.012` and `1.2e-2` are the same value).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Classifies `cfg` against SD v1.5's original scheduler config.
pub(crate) fn classify(cfg: &Value) -> SchedulerConfigStatus {
    let Some(cfg) = cfg.as_object() else {
        return SchedulerConfigStatus::Other {
            differing: vec!["(not a JSON object)".into()],
        };
    };
    let original = sd15();
    let differing: Vec<String> = cfg
        .iter()
        .filter(|(k, v)| {
            k.as_str() != "_diffusers_version" && original.get(*k).is_some_and(|o| !same(o, v))
        })
        .map(|(k, _)| k.clone())
        .collect();
    let added: Vec<String> = cfg
        .keys()
        .filter(|k| !original.contains_key(*k))
        .cloned()
        .collect();
    if added.is_empty() && differing.is_empty() {
        // The version stamp is part of the original file too; a different one with no other
        // change still schedules identically.
        return SchedulerConfigStatus::Original;
    }
    let missing = original.keys().any(|k| !cfg.contains_key(k));
    let meaning_changed: Vec<String> = added
        .iter()
        .filter(|k| match ADDED_BY_DIFFUSERS.iter().find(|(n, _)| n == k) {
            Some((_, Some(want))) => cfg[k.as_str()].as_str() != Some(want),
            Some((_, None)) => false,
            None => false,
        })
        .cloned()
        .collect();
    if differing.is_empty() && !missing && meaning_changed.is_empty() {
        return SchedulerConfigStatus::Resaved {
            diffusers_version: cfg
                .get("_diffusers_version")
                .and_then(Value::as_str)
                .map(str::to_string),
            timestep_spacing: cfg
                .get("timestep_spacing")
                .and_then(Value::as_str)
                .map(str::to_string),
            added,
        };
    }
    let mut differing = differing;
    differing.extend(meaning_changed);
    if differing.is_empty() {
        differing.extend(
            original
                .keys()
                .filter(|k| !cfg.contains_key(*k))
                .map(|k| format!("{k} (missing)")),
        );
    }
    SchedulerConfigStatus::Other { differing }
}

/// Reads `cfg` (the JSON of `file`) as a scheduler config, refusing values speedscape's
/// schedulers do not know: the message names the file, the field, its value, the accepted
/// values and SD v1.5's own, and the fix.
pub fn check_values(file: &std::path::Path, cfg: &Value) -> eyre::Result<SchedulerConfig> {
    serde_json::from_value(cfg.clone()).map_err(|e| {
        let why = e.to_string();
        let field = why.split('`').nth(1).unwrap_or("");
        let sd15_value = sd15()
            .get(field)
            .cloned()
            .or_else(|| (field == "prediction_type").then(|| "epsilon".into()));
        let set = match sd15_value {
            Some(v) => format!("set `{field}` to one of the accepted values (SD v1.5's is {v})"),
            None => "correct the value".into(),
        };
        eyre::eyre!(Fixable::new(
            format!(
                "{} is not a scheduler config speedscape can use: {why}",
                file.display()
            ),
            format!(
                "{set}, or set scheduler_config = \"sd15\" under [model] in config.toml to use SD v1.5's original (bundled in speedscape)"
            ),
        ))
    })
}

/// DPM-Solver++ 4-step timesteps under `cfg`, as speedscape's scheduler builds them.
pub(crate) fn dpmpp4_timesteps(cfg: &Value) -> eyre::Result<Vec<i64>> {
    let cfg: SchedulerConfig = serde_json::from_value(cfg.clone())?;
    let s = schedulers::build(
        SchedulerKind::DpmSolverPp,
        &cfg,
        4,
        &SchedulerOptions::default(),
    )?;
    Ok(s.timesteps().to_vec())
}

fn join(ts: &[i64]) -> String {
    ts.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// The fix for a re-saved config.
pub(crate) const SD15_FIX: &str = "Fix: to schedule as SD v1.5 does, set scheduler_config = \"sd15\" under [model] in config.toml (uses SD v1.5's original config, bundled in speedscape)";

/// A report on a config: the status, a one-line description with its consequence, and the fix
/// where there is one.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerReport {
    /// The file looked at (`None`: the folder has none).
    pub file: Option<String>,
    /// What the file is; `None` when there is no file.
    #[serde(flatten)]
    pub status: Option<SchedulerConfigStatus>,
    /// Which config runs: the file, or SD v1.5's bundled one.
    pub used: SchedulerConfigSource,
    /// DPM-Solver++ 4-step timesteps with the file (`None`: no file, or one no scheduler can
    /// be built from).
    pub dpmpp4_file: Option<Vec<i64>>,
    /// DPM-Solver++ 4-step timesteps with SD v1.5's original (999, 749, 500, 250).
    pub dpmpp4_original: Option<Vec<i64>>,
    /// One line on what the file is and what that changes, then the fix on its own line where
    /// there is one.
    pub message: String,
    /// Whether this deserves a warning (re-saved and obeyed, or another model's config).
    pub warning: bool,
}

impl SchedulerReport {
    /// Looks at `file` (its parsed JSON, `None` when missing) with `used` in force; `family`:
    /// the folder's model family as its manifest records it (`sd2`, `sd-turbo`: the file is the
    /// model's own config, not a copy of SD v1.5's, and is reported as such).
    pub fn new(
        file: &std::path::Path,
        cfg: Option<&Value>,
        used: SchedulerConfigSource,
        family: Option<&str>,
    ) -> Self {
        let name = file.display().to_string();
        let original: Value = serde_json::from_str(SD15_SCHEDULER_CONFIG).expect("valid JSON");
        let dpmpp4_original = dpmpp4_timesteps(&original).ok();
        let Some(cfg) = cfg else {
            return Self {
                file: None,
                status: None,
                used,
                dpmpp4_file: None,
                dpmpp4_original,
                message: format!("{name} is missing; SD v1.5's original config is used"),
                warning: true,
            };
        };
        let status = classify(cfg);
        let dpmpp4_file = dpmpp4_timesteps(cfg).ok();
        let obeyed = match used {
            SchedulerConfigSource::File => "speedscape obeys the file",
            SchedulerConfigSource::Sd15 => {
                "config.toml sets scheduler_config = \"sd15\": SD v1.5's original is used instead"
            }
        };
        let (message, warning) = match &status {
            SchedulerConfigStatus::Original => (
                format!("{name}: SD v1.5's original scheduler config"),
                false,
            ),
            SchedulerConfigStatus::Resaved {
                diffusers_version,
                timestep_spacing,
                added,
            } => {
                let spacing = match timestep_spacing {
                    Some(s) => format!(" with timestep_spacing {s:?}"),
                    None => format!(" adding {}", added.join(", ")),
                };
                let consequence = match (&dpmpp4_file, &dpmpp4_original) {
                    (Some(f), Some(o)) if f != o => format!(
                        " (DPM-Solver++ 4 steps runs at t = {} with this file instead of {} with SD v1.5's original)",
                        join(f),
                        join(o)
                    ),
                    _ => String::new(),
                };
                let fix = match used {
                    SchedulerConfigSource::File => format!("\n{SD15_FIX}"),
                    SchedulerConfigSource::Sd15 => String::new(),
                };
                (
                    format!(
                        "{name} was re-saved by diffusers {}{spacing}; SD v1.5's original has no such key{consequence}; {obeyed}{fix}",
                        diffusers_version.as_deref().unwrap_or("(unknown version)")
                    ),
                    used == SchedulerConfigSource::File,
                )
            }
            SchedulerConfigStatus::Other { .. } if family.is_some_and(|f| f != "sd15") => {
                own_config_message(&name, cfg, family.unwrap_or_default(), used)
            }
            SchedulerConfigStatus::Other { differing } => (
                format!(
                    "{name} is not SD v1.5's scheduler config (differs in {}); {obeyed}",
                    differing.join(", ")
                ),
                true,
            ),
        };
        Self {
            file: Some(name),
            status: Some(status),
            used,
            dpmpp4_file,
            dpmpp4_original,
            message,
            warning,
        }
    }
}

/// The report on a model's own scheduler config (an SD 2.x or SD-Turbo folder): what it says,
/// obeyed without a warning; a warning when config.toml puts SD v1.5's in its place.
fn own_config_message(
    name: &str,
    cfg: &Value,
    family: &str,
    used: SchedulerConfigSource,
) -> (String, bool) {
    let field = |k: &str| cfg.get(k).and_then(Value::as_str).unwrap_or("(unset)");
    let what = format!(
        "{name}: the {family} model's own scheduler config ({}, timestep_spacing {:?}, prediction_type {:?})",
        field("_class_name"),
        field("timestep_spacing"),
        field("prediction_type")
    );
    match used {
        SchedulerConfigSource::File => (format!("{what}; speedscape obeys it"), false),
        SchedulerConfigSource::Sd15 => (
            format!(
                "{what}; config.toml sets scheduler_config = \"sd15\", so SD v1.5's is used instead, which is not this model's\nFix: remove scheduler_config = \"sd15\" from [model] in config.toml"
            ),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original() -> Value {
        serde_json::from_str(SD15_SCHEDULER_CONFIG).unwrap()
    }

    fn resaved() -> Value {
        let mut v = original();
        v["_diffusers_version"] = "0.42.1".into();
        v["timestep_spacing"] = "leading".into();
        v["prediction_type"] = "epsilon".into();
        v
    }

    #[test]
    fn sd15s_own_config_is_original() {
        assert_eq!(classify(&original()), SchedulerConfigStatus::Original);
        // Fewer keys, same values: still the original's values.
        let mut fewer = original();
        fewer.as_object_mut().unwrap().remove("clip_sample");
        assert_eq!(classify(&fewer), SchedulerConfigStatus::Original);
    }

    #[test]
    fn a_diffusers_save_is_resaved_with_its_version_and_spacing() {
        match classify(&resaved()) {
            SchedulerConfigStatus::Resaved {
                diffusers_version,
                timestep_spacing,
                added,
            } => {
                assert_eq!(diffusers_version.as_deref(), Some("0.42.1"));
                assert_eq!(timestep_spacing.as_deref(), Some("leading"));
                assert!(added.contains(&"timestep_spacing".to_string()), "{added:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_models_config_is_other() {
        // SD 2.x-style: v-prediction, different betas.
        let mut v = resaved();
        v["prediction_type"] = "v_prediction".into();
        assert!(matches!(
            classify(&v),
            SchedulerConfigStatus::Other { differing } if differing == ["prediction_type"]
        ));
        let mut v = original();
        v["beta_end"] = 0.02.into();
        v["_class_name"] = "DDIMScheduler".into();
        match classify(&v) {
            SchedulerConfigStatus::Other { differing } => {
                assert!(differing.contains(&"beta_end".to_string()), "{differing:?}");
                assert!(differing.contains(&"_class_name".to_string()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_report_shows_the_schedules_that_change_and_the_fix() {
        let file = std::path::Path::new("scheduler/scheduler_config.json");
        let r = SchedulerReport::new(file, Some(&resaved()), SchedulerConfigSource::File, None);
        let leading = dpmpp4_timesteps(&resaved()).unwrap();
        let linspace = dpmpp4_timesteps(&original()).unwrap();
        assert_eq!(leading, [801, 601, 401, 201], "diffusers' leading schedule");
        assert_eq!(
            linspace,
            [999, 749, 500, 250],
            "diffusers' linspace schedule"
        );
        assert!(r.warning);
        assert!(r.message.contains("801, 601, 401, 201"), "{}", r.message);
        assert!(r.message.contains("999, 749, 500, 250"), "{}", r.message);
        assert!(
            r.message.contains("scheduler_config = \"sd15\""),
            "{}",
            r.message
        );
        let r = SchedulerReport::new(file, Some(&resaved()), SchedulerConfigSource::Sd15, None);
        assert!(!r.warning && !r.message.contains("Fix:"), "{}", r.message);
        let r = SchedulerReport::new(file, Some(&original()), SchedulerConfigSource::File, None);
        assert!(!r.warning, "{}", r.message);
    }
}
