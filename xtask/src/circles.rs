//! Import circles between the files of one crate: file A names `crate::b::…` (or `super::b`)
//! and file b names, directly or through other files of the crate, A back. `cargo xtask lint`
//! fails on any. A parent's `mod x;` is not an import; `#[cfg(test)] mod tests` at the end of a
//! file is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every circle in the crates of the workspace at `root`, one line each.
pub(crate) fn circles(root: &Path) -> Vec<String> {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    crates.extend(["bench", "tests", "xtask"].map(|c| root.join(c)));
    crates.sort();
    let mut found = Vec::new();
    for krate in crates.iter().filter(|c| c.join("src").is_dir()) {
        let files = modules(&krate.join("src"));
        let edges = edges(&files);
        for component in strongly_connected(&edges) {
            let names: Vec<String> = component
                .iter()
                .map(|m| {
                    files[m]
                        .strip_prefix(krate)
                        .unwrap_or(&files[m])
                        .display()
                        .to_string()
                })
                .collect();
            found.push(format!(
                "{}: {}",
                krate.strip_prefix(root).unwrap_or(krate).display(),
                names.join(" <-> ")
            ));
        }
    }
    found
}

/// Module path (`a::b`, `""` for the crate root) → file, for every file under `src` but binaries.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    dirs.push(path);
                }
                continue;
            }
            let Ok(rel) = path.strip_prefix(src) else {
                continue;
            };
            let Some(rel) = rel.to_str().and_then(|r| r.strip_suffix(".rs")) else {
                continue;
            };
            let mut module = rel.replace('/', "::");
            for tail in ["mod", "lib", "main"] {
                if module == tail {
                    module.clear();
                } else if let Some(m) = module.strip_suffix(&format!("::{tail}")) {
                    module = m.to_owned();
                }
            }
            out.insert(module, path);
        }
    }
    out
}

/// The paths a file names after `prefix` (`crate::`, `super::`), as `a::b::c`.
fn paths_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + prefix.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(after[..end].trim_end_matches(':'));
        }
        rest = &after[end..];
    }
    out
}

fn edges(files: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    // The longest module that is a prefix of `path`.
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|m| files.contains_key(m))
    };
    let mut edges = BTreeMap::new();
    for (module, file) in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let text = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        let mut out = BTreeSet::new();
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let named = paths_after(text, "crate::")
            .into_iter()
            .map(str::to_owned)
            .chain(paths_after(text, "super::").into_iter().map(|p| {
                if parent.is_empty() {
                    p.to_owned()
                } else {
                    format!("{parent}::{p}")
                }
            }));
        for path in named {
            if let Some(target) = resolve(&path) {
                let inside = |a: &str, b: &str| b.is_empty() || a.starts_with(&format!("{b}::"));
                if !target.is_empty()
                    && &target != module
                    && !inside(module, &target)
                    && !inside(&target, module)
                {
                    out.insert(target);
                }
            }
        }
        edges.insert(module.clone(), out);
    }
    edges
}

/// The components of more than one module (Kosaraju).
fn strongly_connected(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit<'a>(
        v: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<&'a str>,
        order: &mut Vec<&'a str>,
    ) {
        if !seen.insert(v) {
            return;
        }
        for w in edges.get(v).into_iter().flatten() {
            visit(w, edges, seen, order);
        }
        order.push(v);
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for v in edges.keys() {
        visit(v, edges, &mut seen, &mut order);
    }
    let mut reverse: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (v, ws) in edges {
        for w in ws {
            reverse.entry(w.clone()).or_default().insert(v.clone());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for v in order.into_iter().rev() {
        let mut component = Vec::new();
        visit(v, &reverse, &mut assigned, &mut component);
        if component.len() > 1 {
            component.sort();
            out.push(component.into_iter().map(str::to_owned).collect());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circle_is_found_and_a_chain_is_not() {
        let edges = |pairs: &[(&str, &str)]| {
            let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in pairs {
                e.entry(a.to_string()).or_default().insert(b.to_string());
                e.entry(b.to_string()).or_default();
            }
            e
        };
        assert!(strongly_connected(&edges(&[("a", "b"), ("b", "c")])).is_empty());
        assert_eq!(
            strongly_connected(&edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])),
            vec![vec!["a".to_string(), "b".into(), "c".into()]]
        );
        assert_eq!(
            paths_after(
                "use crate::feed::Poller; my_crate::no; super::store",
                "crate::"
            ),
            vec!["feed::Poller"]
        );
    }
}
