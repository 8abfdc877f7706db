//! Checks that keep the project whole, run as ordinary tests: every Rust file says what it
//! is, and the map of the code names every module.

use std::path::{Path, PathBuf};

fn rust_files(directory: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(directory).expect("readable source directory");
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    // Goal: a reader opening any file learns first what it owns.
    // Method: walk src/, tests/ and benches/ and read each file's first line.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for directory in ["src", "tests", "benches"] {
        rust_files(&root.join(directory), &mut files);
    }
    assert!(10 < files.len(), "found only {files:?}");
    let undocumented: Vec<_> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("readable file");
            !text.starts_with("//!")
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "no `//!` first line: {undocumented:?}"
    );
}

#[test]
fn the_architecture_map_names_every_module() {
    // Goal: docs/ARCHITECTURE.md stays true when a module is added.
    // Method: every file and directory directly under src/ must be named in it.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("the map");
    let entries = std::fs::read_dir(root.join("src")).expect("src directory");
    let mut missing = Vec::new();
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("UTF-8 file name");
        let named = if path.is_dir() {
            format!("src/{name}/")
        } else {
            format!("src/{name}")
        };
        if name != "lib.rs" && !map.contains(&named) {
            missing.push(named);
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/ARCHITECTURE.md: {missing:?}"
    );
}
