//! Serves the browser app (`web/`, built by `cargo xtask` into `web/dist`): the same
//! single-page app at `/` and `/m/{id}`, its hashed assets under `/assets/`.
//!
//! The built app is found at run time, first match wins:
//! 1. `CONCLAVE_WEB_DIR`;
//! 2. `web/` next to the `conclave` executable (an installed copy);
//! 3. the source tree's `web/dist` (development: `cargo xtask run`).
//!
//! Without a built app, `/` falls through to the small static page in `crates/server/static`,
//! so the server (and `cargo test`) works on a fresh clone where `web/dist` does not exist.
//!
//! The app's identity (`web_bundle`): hashed at start, served at `GET /api/bundle` (with the
//! release key and signature) and `GET /bundle-manifest.json`, for the service worker at
//! `/sw.js` that pins it in the browser.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::web_bundle::{BundleError, ReleaseKey, WebBundle};
use crate::AppContext;

/// Hashed asset names never change content: browsers may keep them for a year.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The asset routes; merged into the main router (whose security headers apply).
pub fn routes() -> Router<Arc<AppContext>> {
    Router::new()
        .route("/assets/{*path}", get(asset))
        .route("/sw.js", get(service_worker))
        .route("/api/bundle", get(bundle_info))
        .route("/bundle-manifest.json", get(bundle_manifest))
}

/// Finds and hashes the built app at start; with a release key, refuses one it did not sign.
pub fn load_bundle(release_key: Option<ReleaseKey>) -> Result<Option<Arc<WebBundle>>, BundleError> {
    match web_dir() {
        Some(dir) => Ok(Some(Arc::new(WebBundle::load(&dir, release_key)?))),
        None => Ok(None),
    }
}

/// `{"sha256", "release_key", "signature"}`: what the service worker pins and checks updates by.
async fn bundle_info(State(ctx): State<Arc<AppContext>>) -> Response {
    let bundle = ctx.web_bundle.as_deref();
    let body = serde_json::json!({
        "sha256": bundle.map(WebBundle::sha256_hex),
        "release_key": bundle.and_then(|b| b.release_key).map(|k| k.to_string()),
        "signature": bundle.and_then(|b| b.signature.clone()),
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// The manifest of the app as hashed at start (not the file found in the folder).
async fn bundle_manifest(State(ctx): State<Arc<AppContext>>) -> Response {
    match ctx.web_bundle.as_deref() {
        Some(bundle) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bundle.manifest.to_json(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The service worker: at the site root so that its scope is the whole app. Browsers check it
/// for changes on every navigation, bypassing their HTTP cache.
async fn service_worker(State(ctx): State<Arc<AppContext>>) -> Response {
    let Some(bundle) = ctx.web_bundle.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read(bundle.dir.join("sw.js")).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
                (HeaderName::from_static("service-worker-allowed"), "/"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Middleware in front of the page routes: `/` and `/m/{id}` get the app's `index.html` when
/// the app is built, and fall through to the static page otherwise.
pub async fn app_pages(request: Request, next: Next) -> Response {
    let is_page = matches!(*request.method(), Method::GET | Method::HEAD)
        && is_app_page(request.uri().path());
    if is_page {
        if let Some(dir) = web_dir() {
            if let Ok(html) = tokio::fs::read(dir.join("index.html")).await {
                return (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    html,
                )
                    .into_response();
            }
        }
    }
    next.run(request).await
}

fn is_app_page(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    path.strip_prefix("/m/")
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// Where the built app is, if anywhere.
pub fn web_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CONCLAVE_WEB_DIR") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        candidates.push(exe_dir.join("web"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/dist"));
    candidates
        .into_iter()
        .find(|dir| dir.join("index.html").is_file())
}

async fn asset(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    let Some(relative) = safe_relative(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(dir) = web_dir() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read(dir.join("assets").join(relative)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&path)),
                (header::CACHE_CONTROL, IMMUTABLE),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Accepts only plain relative paths of ordinary file names: no `..`, no absolute paths.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let ok = !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        });
    ok.then(|| PathBuf::from(path))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "html" => "text/html; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_app_pages_get_the_app() {
        assert!(is_app_page("/"));
        assert!(is_app_page("/m/abcdefghijklmnopqrstuvwxyz"));
        assert!(!is_app_page("/m/"));
        assert!(!is_app_page("/m/a/b"));
        assert!(!is_app_page("/api/meetings"));
        assert!(!is_app_page("/healthz"));
    }

    #[test]
    fn asset_paths_cannot_leave_the_assets_folder() {
        assert!(safe_relative("index-abc123.js").is_some());
        assert!(safe_relative("sub/x.wasm").is_some());
        for bad in [
            "",
            "../secret",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "a\\b",
            "%2e%2e",
        ] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn wasm_is_served_as_wasm() {
        assert_eq!(content_type("web_session_bg-1.wasm"), "application/wasm");
        assert_eq!(content_type("index-1.js"), "text/javascript; charset=utf-8");
    }
}
