//! The module maps hold: the import graph between source files, read from the sources, follows
//! src/lib.rs's layer table (every import goes to a lower layer) and has no cycles but the
//! intended ones inside `tui/`; the engine's top-level modules use only those their layer
//! allows (core/src/lib.rs's map); and the engine crate depends on no UI, CLI, async or
//! config-file crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `root` by module path (`report::table`, `tui`), without the crate
/// roots (lib.rs, main.rs) and with the text before its `#[cfg(test)]` module.
fn modules(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] || parts.first().is_some_and(|p| p == "cli") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let code: String = code
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(parts.join("::"), code);
        }
    }
    out
}

/// The longest module of `known` that `path` (`a::b::Item`) names, if any.
fn resolve<'a>(known: &'a BTreeMap<String, String>, path: &str) -> Option<&'a str> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    (1..=segs.len())
        .rev()
        .map(|n| segs[..n].join("::"))
        .find_map(|k| known.get_key_value(&k).map(|(k, _)| k.as_str()))
}

/// Paths a `crate::…` reference names, with `{a, b::{c}}` groups expanded.
fn crate_paths(code: &str, anchor: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(anchor) {
        let before = rest[..at].chars().last();
        rest = &rest[at + anchor.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        expand("", rest, &mut out);
    }
    out
}

/// Expands the path at the start of `text` (after `crate::`) into `out`, prefixed by `prefix`.
fn expand(prefix: &str, text: &str, out: &mut Vec<String>) {
    let head: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let after = &text[head.len()..];
    let full = format!("{prefix}{head}");
    if !after.starts_with('{') {
        out.push(full);
        return;
    }
    let mut depth = 0;
    let mut item = String::new();
    for c in after.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    expand(&full, item.trim(), out);
                    return;
                }
            }
            ',' if depth == 1 => {
                expand(&full, item.trim(), out);
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
}

/// Paths that `super::…` references in `module` name, made absolute (`super::super::x` goes
/// up two levels).
fn super_paths(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for rel in crate_paths(code, "super::") {
        let mut base: Vec<&str> = module.split("::").collect();
        base.pop();
        let mut rest = rel.as_str();
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        base.push(rest);
        out.push(base.join("::"));
    }
    out
}

/// The file import graph: `crate::` and `super::` references, and a parent's references to
/// its own child modules (`mod table;` … `table::Row`).
fn graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let known = modules(root);
    let mut edges = BTreeMap::new();
    for (module, code) in &known {
        let mut deps = BTreeSet::new();
        let mut paths = crate_paths(code, "crate::");
        paths.extend(super_paths(module, code));
        for line in code.lines() {
            let decl = line.trim_start();
            let decl = match decl.strip_prefix("pub") {
                Some(rest) if rest.starts_with('(') => rest.split_once(')').map_or("", |(_, r)| r),
                Some(rest) => rest,
                None => decl,
            }
            .trim_start();
            if let Some(child) = decl.strip_prefix("mod ").and_then(|c| c.strip_suffix(';')) {
                let qualified = if module.is_empty() {
                    child.to_string()
                } else {
                    format!("{module}::{child}")
                };
                let used = code.match_indices(&format!("{child}::")).any(|(i, _)| {
                    !code[..i]
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                });
                if used {
                    paths.push(qualified);
                }
            }
        }
        for p in paths {
            if let Some(target) = resolve(&known, p.trim_matches(':'))
                && target != module
            {
                deps.insert(target.to_string());
            }
        }
        edges.insert(module.clone(), deps);
    }
    edges
}

/// Strongly connected components of more than one module (the import cycles), each sorted.
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<Vec<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for d in g.get(&m).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|m| (m, reach(m))).collect();
    g.keys()
        .map(|m| {
            let mut scc: Vec<String> = g
                .keys()
                .filter(|o| *o == m || (reaches[m].contains(*o) && reaches[*o].contains(m)))
                .cloned()
                .collect();
            scc.sort();
            scc
        })
        .filter(|scc| scc.len() > 1)
        .collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_apps_only_import_cycles_are_the_tuis_intended_ones() {
    let intended: [&[&str]; 2] = [
        &["tui::app", "tui::cheat", "tui::landscape"],
        &["tui::cheat_ui", "tui::landscape_ui", "tui::ui"],
    ];
    let found = cycles(&graph(&root().join("src")));
    for cycle in &found {
        assert!(
            intended
                .iter()
                .any(|ok| cycle.iter().all(|m| ok.contains(&m.as_str()))),
            "an import cycle outside the module map's intended ones: {cycle:?}"
        );
    }
}

/// src/lib.rs's layer table: each row's number and the modules (`tui::*`: every `tui` file).
fn app_layers() -> Vec<(usize, Vec<String>)> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! | "))
        .filter_map(|row| {
            let mut cells = row.split(" | ");
            let layer = cells.next()?.trim().parse().ok()?;
            let files = cells
                .next()?
                .split(", ")
                .map(|f| f.trim().trim_matches('`').to_string())
                .collect();
            Some((layer, files))
        })
        .collect()
}

#[test]
fn every_import_goes_down_the_module_maps_layers() {
    let layers = app_layers();
    assert!(layers.len() >= 10, "src/lib.rs's layer table: {layers:?}");
    let layer_of = |module: &str| {
        layers.iter().find_map(|(n, files)| {
            files
                .iter()
                .any(|f| {
                    f == module
                        || f.strip_suffix("::*")
                            .is_some_and(|p| module.starts_with(&format!("{p}::")))
                })
                .then_some(*n)
        })
    };
    let tui = layer_of("tui").expect("the TUI's layer");
    for (module, deps) in graph(&root().join("src")) {
        let from = layer_of(&module)
            .unwrap_or_else(|| panic!("src/{module} is in no layer of src/lib.rs's module map"));
        for dep in deps {
            let to = layer_of(&dep).unwrap();
            assert!(
                to < from || (to == tui && from == tui),
                "src/{module} (layer {from}) uses {dep} (layer {to}): the module map says it may not"
            );
        }
    }
}

#[test]
fn the_engines_modules_use_only_their_layers() {
    // core/src/lib.rs's map: each top-level module and the ones it may use.
    let lib = std::fs::read_to_string(root().join("core/src/lib.rs")).unwrap();
    let allowed: BTreeMap<String, Vec<String>> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! | [`"))
        .filter_map(|row| {
            let (module, rest) = row.split_once("`]")?;
            let may = rest.trim_end_matches(" |").rsplit(" | ").next()?;
            let may = may
                .split(", ")
                .map(|m| m.trim().trim_matches('`').to_string())
                .filter(|m| m != "—")
                .collect();
            Some((module.to_string(), may))
        })
        .collect();
    assert!(
        allowed.len() >= 7,
        "core/src/lib.rs's layer table: {allowed:?}"
    );
    let g = graph(&root().join("core/src"));
    let top = |m: &str| m.split("::").next().unwrap().to_string();
    for (module, deps) in &g {
        let layer = top(module);
        let may = allowed
            .get(&layer)
            .unwrap_or_else(|| panic!("core module {layer} is not in the layer map"));
        for dep in deps.iter().map(|d| top(d)).filter(|d| *d != layer) {
            assert!(
                may.contains(&dep),
                "core/src/{module} uses {dep}, which its layer ({layer}) may not"
            );
        }
    }
    // Inside a module, its facade (mod.rs) and its files may refer to each other; across
    // modules there is no cycle at all.
    for cycle in cycles(&g) {
        let layers: BTreeSet<String> = cycle.iter().map(|m| top(m)).collect();
        assert_eq!(
            layers.len(),
            1,
            "an import cycle across the engine's layers: {cycle:?}"
        );
    }
}

#[test]
fn the_engine_depends_on_no_ui_cli_async_or_config_file_crate() {
    let manifest = std::fs::read_to_string(root().join("core/Cargo.toml")).unwrap();
    let table: toml::Table = toml::from_str(&manifest).unwrap();
    let deps = table["dependencies"].as_table().unwrap();
    for banned in [
        "clap",
        "ratatui",
        "crossterm",
        "ratatui-image",
        "tokio",
        "toml",
        "color-eyre",
        "indicatif",
        "speedscape",
    ] {
        assert!(
            !deps.contains_key(banned),
            "core/Cargo.toml depends on {banned}"
        );
    }
}

#[test]
fn the_graph_reader_sees_a_cycle_through_grouped_imports() {
    // The reader itself: a cycle spelt with `use crate::{…}` groups and `super::` is found.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "pub mod x;\nuse crate::{b::{Thing, other}};\n",
    )
    .unwrap();
    std::fs::write(
        src.join("a/x.rs"),
        "use super::Local;\nuse super::super::c::Q;\n",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "use crate::a::x::Y;\n").unwrap();
    std::fs::write(src.join("c.rs"), "pub struct Q;\n// use crate::a::Z;\n").unwrap();
    let found = cycles(&graph(src));
    assert_eq!(
        found,
        BTreeSet::from([vec!["a".to_string(), "a::x".into(), "b".into()]])
    );
}
