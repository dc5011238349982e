//! The workspace's rooms and arrows (docs/architecture.md), checked on the tree itself:
//! - the pipeline has a crate of its own, and the training crate does not pull the synthetic world;
//! - the study server's modules never reach into the command line's;
//! - no function in `crates/*/src` is longer than 120 lines, unless docs/architecture.md lists it
//!   (and every function it lists is really that long: the list cannot go stale).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MAX_FUNCTION_LINES: usize = 120;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `cargo metadata` of the workspace (its own packages and their declared dependencies).
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1"])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

fn dependencies(metadata: &serde_json::Value, package: &str) -> BTreeSet<String> {
    let packages = metadata["packages"].as_array().expect("packages");
    let found = packages.iter().find(|p| p["name"] == package).unwrap_or_else(|| panic!("no package {package}"));
    found["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .map(|d| d["name"].as_str().expect("a dependency name").to_string())
        .collect()
}

#[test]
fn the_pipeline_is_its_own_crate_and_training_does_not_pull_the_synthetic_world() {
    let metadata = metadata();
    let pipeline = dependencies(&metadata, "deper-pipeline");
    for needed in ["deper-train", "deper-vlm", "deper-eval", "deper-synth"] {
        assert!(pipeline.contains(needed), "deper-pipeline should build on {needed}: {pipeline:?}");
    }
    for forbidden in ["clap", "axum", "indicatif", "deper-server", "deper-store"] {
        assert!(!pipeline.contains(forbidden), "deper-pipeline must not depend on {forbidden}");
    }
    let train = dependencies(&metadata, "deper-train");
    assert!(!train.contains("deper-synth"), "deper-train depends on deper-synth: {train:?}");
    assert!(dependencies(&metadata, "deper-server").contains("deper-pipeline"));
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("a name");
        let deps = dependencies(&metadata, name);
        assert!(!deps.contains("deper-server"), "{name} depends on the server");
        assert!(!deps.contains("deper-web"), "{name} depends on the web crate");
    }
}

#[test]
fn the_server_never_imports_the_command_line() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates/deper-server/src/server"), &mut files);
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        assert!(!text.contains("crate::cli"), "{} imports crate::cli", file.display());
    }
}

/// A function found in a file: its name, first line (1-based) and length in lines.
#[derive(Debug, Clone, PartialEq)]
struct Function {
    name: String,
    line: usize,
    lines: usize,
}

/// The name of a function whose signature starts on this line (`pub(crate) async fn name<…>(`).
fn function_start(line: &str) -> Option<String> {
    let mut rest = line.trim_start();
    for prefix in ["pub(crate) ", "pub(super) ", "pub ", "const ", "async ", "unsafe ", "extern \"C\" "] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r;
        }
    }
    let rest = rest.strip_prefix("fn ")?;
    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

/// Every function with a body in `source`, nested ones too (their lines count in both). Braces in
/// strings, raw strings, character literals and comments are not counted.
fn functions(source: &str) -> Vec<Function> {
    #[derive(PartialEq)]
    enum State {
        Code,
        LineComment,
        BlockComment(usize),
        Str,
        RawStr(usize),
    }
    let mut found = Vec::new();
    // Open functions: (name, first line, brace depth before it, whether its body has opened).
    let mut open: Vec<(String, usize, usize, bool)> = Vec::new();
    let (mut depth, mut state) = (0usize, State::Code);
    for (index, line) in source.lines().enumerate() {
        if state == State::Code {
            if let Some(name) = function_start(line) {
                open.push((name, index + 1, depth, false));
            }
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            match state {
                State::LineComment => break,
                State::BlockComment(n) => {
                    if c == '*' && next == Some('/') {
                        state = if n == 1 { State::Code } else { State::BlockComment(n - 1) };
                        i += 1;
                    } else if c == '/' && next == Some('*') {
                        state = State::BlockComment(n + 1);
                        i += 1;
                    }
                }
                State::Str => {
                    if c == '\\' {
                        i += 1;
                    } else if c == '"' {
                        state = State::Code;
                    }
                }
                State::RawStr(hashes) => {
                    if c == '"' && chars[i + 1..].iter().take(hashes).filter(|&&h| h == '#').count() == hashes {
                        state = State::Code;
                        i += hashes;
                    }
                }
                State::Code => match c {
                    '/' if next == Some('/') => state = State::LineComment,
                    '/' if next == Some('*') => {
                        state = State::BlockComment(1);
                        i += 1;
                    }
                    '"' => state = State::Str,
                    'r' if matches!(next, Some('"') | Some('#'))
                        && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')) =>
                    {
                        let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
                        if chars.get(i + 1 + hashes) == Some(&'"') {
                            state = State::RawStr(hashes);
                            i += 1 + hashes;
                        }
                    }
                    // A character literal ('{', '\n', '\''); a lifetime ('a) is left alone.
                    '\'' if next == Some('\\') => {
                        i += chars[i + 2..].iter().position(|&q| q == '\'').map_or(chars.len(), |p| p + 2);
                    }
                    '\'' if chars.get(i + 2) == Some(&'\'') => i += 2,
                    // A declaration without a body (a trait method).
                    ';' if open.last().is_some_and(|f| f.2 == depth && !f.3) => {
                        open.pop();
                    }
                    '{' => {
                        if let Some(f) = open.last_mut().filter(|f| f.2 == depth && !f.3) {
                            f.3 = true;
                        }
                        depth += 1;
                    }
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if open.last().is_some_and(|f| f.2 == depth && f.3) {
                            let (name, first, _, _) = open.pop().expect("an open function");
                            found.push(Function { name, line: first, lines: index + 2 - first });
                        }
                    }
                    _ => {}
                },
            }
            i += 1;
        }
        if state == State::LineComment {
            state = State::Code;
        }
    }
    found
}

#[test]
fn the_function_finder_counts_bodies_and_skips_braces_in_literals() {
    let source = "pub fn one() {\n    let s = \"}\";\n    let c = '}';\n    // }\n}\n\
                  trait T {\n    fn declared(&self);\n}\n\
                  pub(crate) fn two<'a>(x: &'a str) -> &'a str {\n    let r = r#\"{ \"# ;\n    /* { */ x\n}\n";
    let found = functions(source);
    assert_eq!(
        found,
        [Function { name: "one".into(), line: 1, lines: 5 }, Function { name: "two".into(), line: 9, lines: 4 }]
    );
}

/// `crates/NAME/src/FILE.rs` `function` entries of the architecture page's exceptions section.
fn listed_exceptions() -> BTreeSet<(String, String)> {
    let page = std::fs::read_to_string(workspace().join("docs/architecture.md")).expect("docs/architecture.md");
    let section = page.split("## Functions over 120 lines").nth(1).expect("a 'Functions over 120 lines' section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| {
            let mut ticks = l.split('`').skip(1).step_by(2);
            let file = ticks.next()?;
            let function = ticks.next()?;
            file.starts_with("crates/").then(|| (file.to_string(), function.to_string()))
        })
        .collect()
}

#[test]
fn no_function_is_longer_than_120_lines_unless_the_architecture_page_says_why() {
    let root = workspace();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).expect("crates/") {
        let src = krate.expect("an entry").path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let listed = listed_exceptions();
    let mut long = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("inside the workspace").to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(file).expect("readable");
        for f in functions(&text).into_iter().filter(|f| f.lines > MAX_FUNCTION_LINES) {
            long.insert((relative.clone(), f.name.clone()));
            assert!(
                listed.contains(&(relative.clone(), f.name.clone())),
                "{relative}:{} `{}` has {} lines (at most {MAX_FUNCTION_LINES}): split it, or list it with the reason in docs/architecture.md",
                f.line,
                f.name,
                f.lines
            );
        }
    }
    let stale: Vec<_> = listed.difference(&long).collect();
    assert!(
        stale.is_empty(),
        "docs/architecture.md lists functions that are not over {MAX_FUNCTION_LINES} lines: {stale:?}"
    );
}

#[test]
fn the_readme_is_a_guide_and_experiments_live_in_docs_each_with_its_command() {
    let root = workspace();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        readme.lines().count() <= 400,
        "README.md has {} lines (a user guide of at most 400)",
        readme.lines().count()
    );
    for page in ["docs/architecture.md", "docs/benchmarks.md"] {
        assert!(root.join(page).is_file(), "{page} is missing");
    }
    let mut pages = 0;
    for entry in std::fs::read_dir(root.join("docs/experiments")).expect("docs/experiments/") {
        let path = entry.expect("an entry").path();
        if path.file_name().is_some_and(|n| n == "README.md") || path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        pages += 1;
        let text = std::fs::read_to_string(&path).expect("readable");
        let has_command = text.split("```sh").skip(1).any(|block| {
            let block = block.split("```").next().unwrap_or("");
            block.contains("deper") || block.contains("cargo ")
        });
        assert!(has_command, "{}: no command that reproduces its table", path.display());
    }
    assert!(pages > 0, "docs/experiments/ holds no experiment page");
    // Build machines' paths belong in nobody's guide.
    for (name, text) in [("README.md", &readme)] {
        for needle in ["/work/", "/var/cache/", "/root/"] {
            assert!(!text.contains(needle), "{name} names a build machine's path ({needle})");
        }
    }
}
