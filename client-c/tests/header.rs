//! The committed `include/shoal.h` must be exactly what the pinned cbindgen generates from
//! `src/` with `cbindgen.toml` (plus the version macros, from the crate version). This runs
//! in `cargo test --workspace`, so CI fails when someone changes the API without regenerating
//! the header. `SHOAL_BLESS_HEADER=1` rewrites the file instead (see `gen_header.sh`).

use std::path::Path;

/// The header text that cbindgen generates now.
fn generate() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    config.after_includes = Some(format!(
        "\n#define SHOAL_VERSION_MAJOR {}\n#define SHOAL_VERSION_MINOR {}\n#define SHOAL_VERSION_PATCH {}\n\
         #define SHOAL_VERSION \"{}\"",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION"),
    ));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn committed_header_matches_cbindgen_output() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/shoal.h");
    let generated = generate();
    if std::env::var_os("SHOAL_BLESS_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/shoal.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "the end".to_string(), |i| format!("line {}", i + 1));
        panic!(
            "client-c/include/shoal.h is out of date (first difference at {line}); \
             run client-c/gen_header.sh and commit the result"
        );
    }
}

#[test]
fn header_declares_every_exported_function() {
    // Every `#[no_mangle]` function in src/ appears in the generated header (cbindgen skips
    // items it cannot translate silently; this catches that).
    let header = generate();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(src).expect("src dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.trim() != "#[no_mangle]" {
                continue;
            }
            let decl = lines.next().unwrap_or_default();
            let name = decl
                .split("fn ")
                .nth(1)
                .and_then(|rest| rest.split('(').next())
                .unwrap_or_default();
            if !header.contains(&format!("{name}(")) {
                missing.push(name.to_string());
            }
        }
    }
    assert!(missing.is_empty(), "not in the header: {missing:?}");
}
