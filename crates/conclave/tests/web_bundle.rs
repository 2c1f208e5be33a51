//! `conclave serve` and the web app's identity: the bundle hash it prints at start is the
//! hash of the folder it serves, recomputed here with coreutils (`sha256sum`), not with the
//! server's code; with a release key it refuses an app that key did not sign.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// A small built app: what `cargo xtask web` makes, in miniature. Its stale manifest names a
/// hash that is not the files': the server must hash the files, not believe the manifest.
fn write_app(dir: &Path) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>t</title>").unwrap();
    std::fs::write(
        dir.join("sw.js"),
        "self.addEventListener('fetch', () => {});",
    )
    .unwrap();
    std::fs::write(dir.join("assets/index-AbC_1.js"), "console.log(1)").unwrap();
    std::fs::write(dir.join("assets/web_session_bg-x.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(
        dir.join("bundle-manifest.json"),
        format!("{{\"files\": {{}}, \"sha256\": \"{}\"}}", "0".repeat(64)),
    )
    .unwrap();
}

/// The bundle hash as README.md tells anyone to recompute it by hand.
fn sha256sum_of(dir: &Path) -> String {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "find . -type f ! -path ./bundle-manifest.json ! -path ./bundle.sig \
             | sed 's|^\\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum",
        )
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let hash = text.split_whitespace().next().unwrap().to_owned();
    assert_eq!(hash.len(), 64, "{text}");
    hash
}

/// A GET on the client's own TLS configuration: reqwest here has no built-in provider.
async fn get(url: String) -> reqwest::Result<reqwest::Response> {
    client::tls::http().get(url).send().await
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

fn serve(
    web_dir: &Path,
    data_dir: &Path,
    port: u16,
    release_key: Option<&str>,
) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_conclave"));
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--media-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("CONCLAVE_WEB_DIR", web_dir)
        .env_remove("CONCLAVE_WEB_RELEASE_KEY")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(key) = release_key {
        command.args(["--web-release-key", key]);
    }
    command.spawn().unwrap()
}

/// The hash from the `web bundle sha256: ` line of a starting server.
async fn printed_hash(child: &mut tokio::process::Child) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(hash) = line.strip_prefix("web bundle sha256: ") {
                return hash.to_owned();
            }
        }
        panic!("conclave serve ended without printing its web bundle hash");
    })
    .await
    .expect("the hash is printed within 30 s")
}

/// A server that must refuse to start: its exit status and what it said.
async fn refusal(mut child: tokio::process::Child) -> String {
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("conclave serve exits within 30 s")
        .unwrap();
    assert!(!status.success(), "conclave serve started");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    stderr
}

#[tokio::test]
async fn serve_prints_the_hash_of_the_web_app_it_serves_and_hands_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web");
    write_app(&web);
    let expected = sha256sum_of(&web);
    let port = free_port();
    let mut child = serve(&web, &dir.path().join("data"), port, None);
    assert_eq!(printed_hash(&mut child).await, expected);

    let base = format!("http://127.0.0.1:{port}");
    let info: serde_json::Value = get(format!("{base}/api/bundle"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info,
        serde_json::json!({"sha256": expected, "release_key": null, "signature": null})
    );
    // The manifest served is the one computed from the files, each hash as sha256sum has it.
    let manifest: serde_json::Value = get(format!("{base}/bundle-manifest.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["sha256"], expected);
    let files = manifest["files"].as_object().unwrap();
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "assets/index-AbC_1.js",
            "assets/web_session_bg-x.wasm",
            "index.html",
            "sw.js"
        ]
    );
    let sw = get(format!("{base}/sw.js")).await.unwrap();
    assert_eq!(sw.status(), 200);
    assert_eq!(sw.headers()["service-worker-allowed"], "/");
    assert!(sw.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    child.kill().await.unwrap();

    // One byte changed anywhere is another bundle.
    std::fs::write(web.join("assets/index-AbC_1.js"), "console.log(2)").unwrap();
    let changed = sha256sum_of(&web);
    assert_ne!(changed, expected);
    let mut child = serve(&web, &dir.path().join("data"), free_port(), None);
    assert_eq!(printed_hash(&mut child).await, changed);
}

#[tokio::test]
async fn with_a_release_key_serve_refuses_an_app_that_key_did_not_sign() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web");
    write_app(&web);
    let data = dir.path().join("data");
    let key = server::web_bundle::signing_key(&[42; 32]);
    let public = server::web_bundle::release_key_of(&key).to_string();

    let stderr = refusal(serve(&web, &data, free_port(), Some(&public))).await;
    assert!(stderr.contains("is not signed (no bundle.sig)"), "{stderr}");

    let other = server::web_bundle::signing_key(&[43; 32]);
    let bundle = server::web_bundle::Manifest::of_dir(&web).unwrap().sha256();
    std::fs::write(
        web.join("bundle.sig"),
        server::web_bundle::sign(&other, &bundle),
    )
    .unwrap();
    let stderr = refusal(serve(&web, &data, free_port(), Some(&public))).await;
    assert!(
        stderr.contains("is not a signature of web bundle"),
        "{stderr}"
    );

    let stderr = refusal(serve(&web, &data, free_port(), Some("not-a-key"))).await;
    assert!(
        stderr.contains("release key must be 64 hex digits"),
        "{stderr}"
    );

    let signature = server::web_bundle::sign(&key, &bundle);
    std::fs::write(web.join("bundle.sig"), format!("{signature}\n")).unwrap();
    let port = free_port();
    let mut child = serve(&web, &data, port, Some(&public));
    assert_eq!(printed_hash(&mut child).await, sha256sum_of(&web));
    let info: serde_json::Value = get(format!("http://127.0.0.1:{port}/api/bundle"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["release_key"], public);
    assert_eq!(info["signature"], signature);
}

#[tokio::test]
async fn a_web_dir_that_holds_no_built_app_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("not-built");
    std::fs::create_dir_all(empty.join("assets")).unwrap();
    let stderr = refusal(serve(&empty, &dir.path().join("data"), free_port(), None)).await;
    assert!(
        stderr.contains("not-built is not a built web app (no index.html)"),
        "{stderr}"
    );
}
