//! The browser app compiled into the binary: `build.rs` lists every file of `web/dist` as it
//! was when the binary was built (none when the app was not built, e.g. on a fresh clone
//! before `cargo xtask web`), so that the release binary alone serves the whole product.

/// (relative name, bytes) of every file of the built app.
pub static FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/embedded_web.rs"));
