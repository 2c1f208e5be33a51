//! Embeds the built web app (`web/dist`) into the binary; see `src/embedded_web.rs`.
//!
//! Written by hand rather than with an embedding crate: the usual ones read files from disk
//! in debug builds or miss files added to the folder between builds, while Vite's hashed names
//! change with every build. Cargo reruns this script when anything under the folder changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let web = manifest_dir.join("../../web");
    let dist = web.join("dist");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    // A path that does not exist would make cargo rerun this on every build; watch the web
    // folder until the app is built (its creation changes the folder), then the app itself.
    let watched = if dist.is_dir() { &dist } else { &web };
    println!("cargo:rerun-if-changed={}", watched.display());
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();
    let mut listing = String::from("&[\n");
    for (name, path) in &files {
        let _ = writeln!(
            listing,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        );
    }
    listing.push_str("]\n");
    if let Err(e) = std::fs::write(out.join("embedded_web.rs"), listing) {
        panic!("cannot write the embedded web app listing: {e}");
    }
}

fn collect(root: &Path, folder: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) => panic!("cannot read {}: {e}", folder.display()),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            let name: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let absolute = std::fs::canonicalize(&path).unwrap_or(path.clone());
            files.push((name.join("/"), absolute));
        }
    }
}
