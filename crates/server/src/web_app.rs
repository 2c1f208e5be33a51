//! Serves the browser app (`web/`, built by `cargo xtask web` into `web/dist`): the same
//! single-page app at `/` and `/m/{id}`, its hashed assets under `/assets/`.
//!
//! Where the app comes from ([`WebAppSource`]): the copy compiled into the `conclave` binary
//! (its build script embeds `web/dist` when it is built), so that the release binary alone
//! serves everything; a folder only when the operator names one (`--web-dir`); or none, when
//! neither exists, and then `/` falls through to the small static page in
//! `crates/server/static`, so the server (and `cargo test`) works on a fresh clone.
//!
//! Either way every file is read into memory at start and hashed (`web_bundle`), so that what
//! is served is byte for byte what the hash printed at start covers. The hash is served at
//! `GET /api/bundle` (with the release key and signature) and `GET /bundle-manifest.json`, for
//! the service worker at `/sw.js` that pins it in the browser.

use std::borrow::Cow;
use std::path::PathBuf;
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

/// Where the browser app is served from.
#[derive(Debug, Clone, Default)]
pub enum WebAppSource {
    /// No app: `/` is the small static page.
    #[default]
    None,
    /// `--web-dir`: a folder the operator names (a build of their own, a signed release).
    Dir(PathBuf),
    /// The app compiled into the binary: (relative name, bytes).
    Embedded(&'static [(&'static str, &'static [u8])]),
}

/// Reads and hashes the app at start; with a release key, refuses one it did not sign.
pub fn load_bundle(
    source: &WebAppSource,
    release_key: Option<ReleaseKey>,
) -> Result<Option<Arc<WebBundle>>, BundleError> {
    let bundle = match source {
        WebAppSource::None => return Ok(None),
        WebAppSource::Dir(dir) => WebBundle::load(dir, release_key)?,
        WebAppSource::Embedded(files) => WebBundle::embedded(files, release_key)?,
    };
    Ok(Some(Arc::new(bundle)))
}

/// A file of the app as a response body, without copying what is compiled in.
// The `Cow` itself is the point: only its variant says whether the bytes are `'static`.
#[allow(clippy::ptr_arg)]
fn body_of(bytes: &Cow<'static, [u8]>) -> axum::body::Bytes {
    match bytes {
        Cow::Borrowed(bytes) => axum::body::Bytes::from_static(bytes),
        Cow::Owned(bytes) => axum::body::Bytes::copy_from_slice(bytes),
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
    match bundle.file("sw.js") {
        Some(bytes) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
                (HeaderName::from_static("service-worker-allowed"), "/"),
            ],
            body_of(bytes),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Middleware in front of the page routes: `/` and `/m/{id}` get the app's `index.html` when
/// the app is built, and fall through to the static page otherwise.
pub async fn app_pages(
    State(ctx): State<Arc<AppContext>>,
    request: Request,
    next: Next,
) -> Response {
    let is_page = matches!(*request.method(), Method::GET | Method::HEAD)
        && is_app_page(request.uri().path());
    if is_page {
        if let Some(html) = ctx.web_bundle.as_deref().and_then(|b| b.file("index.html")) {
            return (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body_of(html),
            )
                .into_response();
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

async fn asset(
    State(ctx): State<Arc<AppContext>>,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Response {
    let Some(relative) = safe_relative(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let file = ctx
        .web_bundle
        .as_deref()
        .and_then(|bundle| bundle.file(&format!("assets/{relative}")));
    match file {
        Some(bytes) => (
            [
                (header::CONTENT_TYPE, content_type(&path)),
                (header::CACHE_CONTROL, IMMUTABLE),
            ],
            body_of(bytes),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Accepts only plain relative paths of ordinary file names: no `..`, no absolute paths.
fn safe_relative(path: &str) -> Option<&str> {
    let ok = !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        });
    ok.then_some(path)
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
