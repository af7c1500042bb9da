//! The code's shape, checked: rules of the layout that a refactoring could quietly break.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The receiver holds wharf to Mixpanel's rules; if it shared the sender's code (its JSON
/// scanner, its gzip, its record shapes) it could not catch the sender's mistakes.
#[test]
fn the_receiver_imports_nothing_from_the_sender() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/receiver"), &mut files);
    assert!(files.len() >= 5, "src/receiver/ holds the receiver");
    let forbidden = ["wharf_operators", "wharf_pipelines", "crate::"];
    for file in &files {
        let text = fs::read_to_string(file).expect("read a source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                assert!(
                    !code.contains(word),
                    "{}:{}: the receiver uses `{word}` (only its own modules, std and crates)",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

/// A source file's module path (`crate_dir` is `src`, `operators/src` or `pipelines/src`).
fn module_of(crate_name: &str, crate_dir: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(crate_dir).expect("a file of the crate");
    let mut path = vec![crate_name.to_string()];
    for part in rel.with_extension("").iter() {
        path.push(part.to_string_lossy().into_owned());
    }
    if matches!(
        path.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        path.pop();
    }
    path
}

/// Paths a file names (`crate::…`, `super::…`, `self::…`, `wharf_operators::…`,
/// `wharf_pipelines::…`) in its code before its unit tests, comments left out.
fn named_paths(text: &str) -> Vec<Vec<String>> {
    let code_end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    let mut out = Vec::new();
    for line in text[..code_end].lines() {
        let code = line.split("//").next().unwrap_or("");
        let bytes = code.as_bytes();
        let mut at = 0;
        while at < code.len() {
            let rest = &code[at..];
            let starts = [
                "crate::",
                "super::",
                "self::",
                "wharf_operators::",
                "wharf_pipelines::",
            ];
            let boundary =
                at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            match starts.iter().find(|s| rest.starts_with(**s)) {
                Some(_) if boundary => {
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                        .unwrap_or(rest.len());
                    out.push(
                        rest[..end]
                            .split("::")
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect(),
                    );
                    at += end.max(1);
                }
                _ => at += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
    }
    out
}

/// "No two modules import each other" (a parent and the modules it declares aside): the code
/// reads in one direction.
#[test]
fn no_two_modules_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crates = [
        ("wharf", root.join("src")),
        ("wharf_operators", root.join("operators/src")),
        ("wharf_pipelines", root.join("pipelines/src")),
    ];
    let mut modules = std::collections::BTreeMap::new();
    for (name, dir) in &crates {
        let mut files = Vec::new();
        rust_files(dir, &mut files);
        for file in files {
            modules.insert(module_of(name, dir, &file), file);
        }
    }
    let mut edges = std::collections::BTreeSet::new();
    for (module, file) in &modules {
        let text = fs::read_to_string(file).expect("read a source file");
        for path in named_paths(&text) {
            let (mut base, rest): (Vec<String>, &[String]) = match path[0].as_str() {
                "crate" => (vec![module[0].clone()], &path[1..]),
                "self" => (module.clone(), &path[1..]),
                "wharf_operators" | "wharf_pipelines" => (vec![path[0].clone()], &path[1..]),
                _ => {
                    let ups = path.iter().take_while(|s| *s == "super").count();
                    (
                        module[..module.len().saturating_sub(ups)].to_vec(),
                        &path[ups..],
                    )
                }
            };
            // The deepest module the path names.
            let mut target = None;
            for segment in rest {
                base.push(segment.clone());
                if modules.contains_key(&base) {
                    target = Some(base.clone());
                }
            }
            if let Some(target) = target.filter(|t| t != module) {
                edges.insert((module.clone(), target));
            }
        }
    }
    let related = |a: &[String], b: &[String]| a.starts_with(b) || b.starts_with(a);
    let cycles: Vec<String> = edges
        .iter()
        .filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone())) && !related(a, b))
        .map(|(a, b)| format!("{} <-> {}", a.join("::"), b.join("::")))
        .collect();
    assert!(
        cycles.is_empty(),
        "modules that import each other: {cycles:#?}"
    );
}

/// No source file (outside tests and benches) is over 800 lines, unit tests aside.
#[test]
fn no_source_file_grows_past_800_lines() {
    const LIMIT: usize = 800;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "operators/src", "pipelines/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut over = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("read a source file");
        let code_end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
        let lines = text[..code_end].lines().count();
        let name = file
            .strip_prefix(root)
            .expect("under the root")
            .display()
            .to_string();
        if lines > LIMIT {
            over.push(format!("{name}: {lines} lines (at most {LIMIT})"));
        }
    }
    assert!(over.is_empty(), "files too long: {over:#?}");
}
