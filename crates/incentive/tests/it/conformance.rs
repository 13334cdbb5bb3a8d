//! Every public conformance vector matches the reference bit for bit.

use std::path::PathBuf;

use agora_incentive::{epoch, json};

/// `shared/vectors/yuma` beside the checkout, or `AGORA_YUMA_VECTORS`.
fn vector_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AGORA_YUMA_VECTORS") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/yuma")
}

#[test]
fn every_public_vector_matches_the_reference() {
    let dir = vector_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read vectors at {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "expected the public suite, found {} files",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read vector");
        let vector = json::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let want = vector.expected.expect("public vectors carry `expected`");
        let got = epoch(&vector.input).expect("valid input");
        if let Some((field, g, w)) = json::first_mismatch(&got, &want) {
            failures.push(format!("{}: {field}: got {g} want {w}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
