//! Fails the build when a file under `it/` is not a module of the test
//! binary: such a file would never compile, and its tests never run.

use std::path::Path;

fn main() {
    let it = Path::new("it");
    println!("cargo:rerun-if-changed=it");
    let main = std::fs::read_to_string(it.join("main.rs")).expect("it/main.rs");
    let declared: Vec<&str> = main
        .lines()
        .filter_map(|line| line.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(it).expect("the it/ directory").flatten() {
        let path = entry.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let module = path.extension().is_some_and(|e| e == "rs") || path.is_dir();
        if module && stem != "main" && !declared.contains(&stem) {
            missing.push(path.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "not modules of the test binary (add `mod <name>;` to it/main.rs): {missing:?}"
    );
}
