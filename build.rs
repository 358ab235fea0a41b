//! Records which engine patches this build carries (`pcai-inference info` lists them): for each
//! crate in `engine/crates.txt` that `Cargo.toml` patches, the patch names from the stamp that
//! `engine/prepare_engine.py` left in its prepared folder.

use std::fs;
use std::path::Path;

fn main() {
    // Read at run time: a build-script binary reused from another checkout of the same target
    // folder must not look in that checkout.
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&root);
    println!("cargo:rerun-if-changed=engine/crates.txt");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let crates = fs::read_to_string(root.join("engine/crates.txt")).unwrap_or_default();
    let mut carried = Vec::new();
    for line in crates.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(name), Some(version)) = (fields.next(), fields.next()) else {
            continue;
        };
        let folder = format!("engine/build/{name}-{version}");
        if !manifest.contains(&format!("path = \"{folder}\"")) {
            continue;
        }
        let stamp = format!("{folder}/.pcai-engine-patches.json");
        println!("cargo:rerun-if-changed={stamp}");
        let text = fs::read_to_string(root.join(&stamp)).unwrap_or_else(|_| {
            panic!("{stamp} is missing: run `python engine/prepare_engine.py` before cargo")
        });
        let stamp: serde_json::Value = serde_json::from_str(&text).expect("engine stamp is JSON");
        for patch in stamp["patches"].as_array().into_iter().flatten() {
            if let Some(patch) = patch["name"].as_str() {
                carried.push(format!("{name} {version}/{patch}"));
            }
        }
    }
    println!("cargo:rustc-env=PCAI_ENGINE_PATCHES={}", carried.join(";"));
}
