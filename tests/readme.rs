//! The README's install section against the facts it states.

/// The Rust version the README asks for is Cargo.toml's `rust-version`,
/// and it says how to get a `pipwatch` command (the examples need one).
#[test]
fn the_readme_states_the_real_prerequisites() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("Cargo.toml has a rust-version");
    assert!(readme.contains(&format!("You need Rust {msrv} or newer")), "README names another Rust version");
    assert!(readme.contains("cargo install --path .") && readme.contains("./target/release/pipwatch"));
    assert!(readme.contains("a C compiler"));
}
