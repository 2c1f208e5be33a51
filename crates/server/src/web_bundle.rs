//! What identifies the web app a server hands out: the **bundle hash**, and the release key's
//! signature over it.
//!
//! The bundle hash of a built app (`web/dist`) is the SHA-256 of its canonical manifest: one line
//! `<sha256 of the file, 64 lowercase hex>  <path>\n` per file, paths relative to the folder,
//! `/`-separated, sorted by their bytes, two spaces between hash and path. That is exactly what
//! `sha256sum` prints, so anyone can recompute it by hand:
//!
//! ```sh
//! cd web/dist && find . -type f ! -path ./bundle-manifest.json ! -path ./bundle.sig \
//!   | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum | sha256sum
//! ```
//!
//! Every file counts except [`MANIFEST_FILE`] (written from the manifest) and [`SIGNATURE_FILE`]
//! (the signature over the hash). A release is signed with Ed25519 over
//! [`SIGNED_PREFIX`] followed by the bundle hash in hex.
//!
//! This file is the one definition of all of it: `xtask` compiles it too (`#[path]`), to write
//! the manifest after a build and to sign one, so it needs nothing but std, `sha2` and
//! `ed25519-dalek`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Written into the built app by `cargo xtask web`: `{"files": {path: sha256}, "sha256": hash}`.
pub const MANIFEST_FILE: &str = "bundle-manifest.json";
/// Written by `cargo xtask web-sign`: the release key's signature, 128 hex digits.
pub const SIGNATURE_FILE: &str = "bundle.sig";
/// What a release key signs: this, then the bundle hash in lowercase hex.
pub const SIGNED_PREFIX: &str = "conclave web bundle v1\n";

/// Every file of a built app and its SHA-256, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub files: BTreeMap<String, [u8; 32]>,
}

#[derive(Debug)]
pub enum BundleError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file whose name the manifest cannot carry (and the server would not serve).
    BadName(PathBuf),
    /// Neither a file nor a folder (a symlink, a socket).
    NotAFile(PathBuf),
    /// A key or signature that is not what it must be; the text says why.
    Malformed(String),
    /// The signature does not verify with the release key.
    BadSignature { bundle: String, key: String },
    /// A release key is configured but the app carries no signature.
    Unsigned { origin: String, key: String },
    /// A folder named as the web app holds no `index.html`.
    NoApp(PathBuf),
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleError::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            BundleError::BadName(path) => write!(
                f,
                "{}: web app file names may only use A-Z a-z 0-9 . - _ and /",
                path.display()
            ),
            BundleError::NotAFile(path) => {
                write!(f, "{}: not a regular file or folder", path.display())
            }
            BundleError::Malformed(why) => f.write_str(why),
            BundleError::BadSignature { bundle, key } => write!(
                f,
                "the web app's {SIGNATURE_FILE} is not a signature of web bundle {bundle} by \
                 release key {key}: this is not the release that key signed"
            ),
            BundleError::Unsigned { origin, key } => write!(
                f,
                "release key {key} is configured but the web app ({origin}) is not signed (no \
                 {SIGNATURE_FILE}): sign it with `cargo xtask web-sign --key <file>`, or serve \
                 the signed release"
            ),
            BundleError::NoApp(dir) => write!(
                f,
                "{} is not a built web app (no index.html): build it with `cargo xtask web`, \
                 or leave --web-dir out to serve the app built into the binary",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for BundleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BundleError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Every file under `dir`, by its `/`-separated relative name (manifest and signature included).
pub fn read_dir_files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, BundleError> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let io = |source| BundleError::Io {
            path: folder.clone(),
            source,
        };
        for entry in std::fs::read_dir(&folder).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|source| BundleError::Io {
                path: path.clone(),
                source,
            })?;
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            if !kind.is_file() {
                return Err(BundleError::NotAFile(path));
            }
            let relative = relative_name(dir, &path)?;
            let bytes = std::fs::read(&path).map_err(|source| BundleError::Io {
                path: path.clone(),
                source,
            })?;
            files.insert(relative, bytes);
        }
    }
    Ok(files)
}

impl Manifest {
    /// Reads every file under `dir` (but the manifest and signature files) and hashes it.
    pub fn of_dir(dir: &Path) -> Result<Manifest, BundleError> {
        let files = read_dir_files(dir)?;
        Manifest::of_files(
            files
                .iter()
                .map(|(name, bytes)| (name.as_str(), bytes.as_slice())),
        )
    }

    /// Hashes the files given by relative name (but the manifest and signature files),
    /// refusing a name [`Manifest::of_dir`] would refuse.
    pub fn of_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Manifest, BundleError> {
        let mut manifest = BTreeMap::new();
        for (name, bytes) in files {
            if !name.split('/').all(is_plain_name) {
                return Err(BundleError::BadName(PathBuf::from(name)));
            }
            if name == MANIFEST_FILE || name == SIGNATURE_FILE {
                continue;
            }
            manifest.insert(name.to_owned(), Sha256::digest(bytes).into());
        }
        Ok(Manifest { files: manifest })
    }

    /// The `sha256sum`-format text the bundle hash is taken over.
    pub fn canonical_text(&self) -> String {
        let mut text = String::new();
        for (path, digest) in &self.files {
            text.push_str(&hex(digest));
            text.push_str("  ");
            text.push_str(path);
            text.push('\n');
        }
        text
    }

    /// The bundle hash.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_text().as_bytes()).into()
    }

    /// The manifest as JSON, as `cargo xtask web` writes it into [`MANIFEST_FILE`]. File names
    /// are checked to be plain (see [`BundleError::BadName`]), so nothing needs escaping.
    pub fn to_json(&self) -> String {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|(path, digest)| format!("\n    \"{path}\": \"{}\"", hex(digest)))
            .collect();
        format!(
            "{{\n  \"files\": {{{}\n  }},\n  \"sha256\": \"{}\"\n}}\n",
            files.join(","),
            hex(&self.sha256())
        )
    }
}

fn relative_name(dir: &Path, path: &Path) -> Result<String, BundleError> {
    let bad = || BundleError::BadName(path.to_path_buf());
    let relative = path.strip_prefix(dir).map_err(|_| bad())?;
    let mut parts = Vec::new();
    for part in relative.components() {
        let std::path::Component::Normal(part) = part else {
            return Err(bad());
        };
        let part = part.to_str().ok_or_else(bad)?;
        if !is_plain_name(part) {
            return Err(bad());
        }
        parts.push(part);
    }
    Ok(parts.join("/"))
}

/// A file or folder name the manifest can carry and the server serves: A-Z a-z 0-9 . - _.
fn is_plain_name(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The operator's release public key (Ed25519, 32 bytes, written as 64 hex digits); checked to
/// be a valid point when parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReleaseKey([u8; 32]);

impl std::fmt::Debug for ReleaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReleaseKey({self})")
    }
}

impl std::fmt::Display for ReleaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl std::str::FromStr for ReleaseKey {
    type Err = BundleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; 32] = parse_hex(s.trim(), "release key")?;
        VerifyingKey::from_bytes(&bytes)
            .map(|_| ReleaseKey(bytes))
            .map_err(|_| {
                BundleError::Malformed("the release key is not an Ed25519 public key".into())
            })
    }
}

impl ReleaseKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks `signature_hex` (as in [`SIGNATURE_FILE`]) over the bundle hash.
    pub fn verify(&self, bundle: &[u8; 32], signature_hex: &str) -> Result<(), BundleError> {
        let signature: [u8; 64] = parse_hex(signature_hex.trim(), "signature")?;
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| {
            BundleError::Malformed("the release key is not an Ed25519 public key".into())
        })?;
        key.verify_strict(&signed_message(bundle), &Signature::from_bytes(&signature))
            .map_err(|_| BundleError::BadSignature {
                bundle: hex(bundle),
                key: self.to_string(),
            })
    }
}

/// What is signed for a bundle hash.
pub fn signed_message(bundle: &[u8; 32]) -> Vec<u8> {
    format!("{SIGNED_PREFIX}{}", hex(bundle)).into_bytes()
}

/// A release signing key from its 32-byte seed.
pub fn signing_key(seed: &[u8; 32]) -> SigningKey {
    SigningKey::from_bytes(seed)
}

/// The signature (hex, as in [`SIGNATURE_FILE`]) of a bundle hash.
pub fn sign(key: &SigningKey, bundle: &[u8; 32]) -> String {
    hex(&key.sign(&signed_message(bundle)).to_bytes())
}

/// The public half of a signing key.
pub fn release_key_of(key: &SigningKey) -> ReleaseKey {
    ReleaseKey(key.verifying_key().to_bytes())
}

/// A built app as the server holds it: every file in memory (so that what it serves is exactly
/// what it hashed at start), its manifest and hash, its signature.
#[derive(Debug, Clone)]
pub struct WebBundle {
    /// Where the app came from, for messages: a folder, or the binary.
    pub origin: String,
    files: BTreeMap<String, Cow<'static, [u8]>>,
    pub manifest: Manifest,
    pub sha256: [u8; 32],
    /// The signature, checked against the release key when one is configured.
    pub signature: Option<String>,
    pub release_key: Option<ReleaseKey>,
}

impl WebBundle {
    /// Reads the app in `dir` and hashes it from its files (never trusting a manifest found
    /// there); with a release key, refuses an app that key did not sign.
    pub fn load(dir: &Path, release_key: Option<ReleaseKey>) -> Result<WebBundle, BundleError> {
        if !dir.join("index.html").is_file() {
            return Err(BundleError::NoApp(dir.to_path_buf()));
        }
        let files = read_dir_files(dir)?
            .into_iter()
            .map(|(name, bytes)| (name, Cow::Owned(bytes)))
            .collect();
        WebBundle::from_files(dir.display().to_string(), files, release_key)
    }

    /// The app compiled into the binary: (relative name, bytes) pairs.
    pub fn embedded(
        files: &'static [(&'static str, &'static [u8])],
        release_key: Option<ReleaseKey>,
    ) -> Result<WebBundle, BundleError> {
        let files = files
            .iter()
            .map(|(name, bytes)| ((*name).to_owned(), Cow::Borrowed(*bytes)))
            .collect();
        WebBundle::from_files("built into the binary".to_owned(), files, release_key)
    }

    fn from_files(
        origin: String,
        files: BTreeMap<String, Cow<'static, [u8]>>,
        release_key: Option<ReleaseKey>,
    ) -> Result<WebBundle, BundleError> {
        let manifest =
            Manifest::of_files(files.iter().map(|(name, bytes)| (name.as_str(), &**bytes)))?;
        let sha256 = manifest.sha256();
        let signature = files
            .get(SIGNATURE_FILE)
            .map(|bytes| String::from_utf8_lossy(bytes).trim().to_owned());
        if let Some(key) = &release_key {
            match &signature {
                Some(signature) => key.verify(&sha256, signature)?,
                None => {
                    return Err(BundleError::Unsigned {
                        origin,
                        key: key.to_string(),
                    })
                }
            }
        }
        Ok(WebBundle {
            origin,
            files,
            manifest,
            sha256,
            signature,
            release_key,
        })
    }

    /// A file of the app by its relative name (`index.html`, `assets/x.js`).
    pub fn file(&self, name: &str) -> Option<&Cow<'static, [u8]>> {
        self.files.get(name)
    }

    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Exactly `N` bytes from `2N` hex digits (either case); `what` names it in the refusal.
pub fn parse_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], BundleError> {
    if text.len() != 2 * N {
        return Err(BundleError::Malformed(format!(
            "the {what} must be {} hex digits, not {}",
            2 * N,
            text.len()
        )));
    }
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => out[i] = (hi * 16 + lo) as u8,
            _ => {
                return Err(BundleError::Malformed(format!(
                    "the {what} is not hex: {:?} at position {}",
                    String::from_utf8_lossy(pair),
                    2 * i
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, bytes) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        dir
    }

    #[test]
    fn the_hash_is_sha256sum_of_the_sorted_file_list() {
        let dir = app(&[
            ("index.html", b"<html>"),
            ("assets/b.js", b"b"),
            ("assets/a-1.wasm", b"\0asm"),
            ("sw.js", b"sw"),
        ]);
        let manifest = Manifest::of_dir(dir.path()).unwrap();
        // What `sha256sum` prints for these files, sorted, and the hash of that (the pipeline in
        // the module's doc, run by hand).
        let listing = "\
cd5d4935a48c0672cb06407bb443bc0087aff947c6b864bac886982c73b3027f  assets/a-1.wasm
3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d  assets/b.js
b7d082ee12e91b756ea22e8513b8594eebcf5d39fab813da3cb55794dc888ad7  index.html
7865b7e6b9d241d744d330eec3b3a0fe4f9d36af75d96291638504680f805bfd  sw.js
";
        assert_eq!(manifest.canonical_text(), listing);
        assert_eq!(
            hex(&manifest.sha256()),
            "72d8ca3595c2e53ab4bf9742dedff3920a4e2a490b83b2d03bd8bef4cf97be64"
        );
    }

    #[test]
    fn the_manifest_and_signature_files_do_not_count_and_every_byte_does() {
        let dir = app(&[("index.html", b"<html>"), ("assets/a.js", b"a")]);
        let before = Manifest::of_dir(dir.path()).unwrap().sha256();
        std::fs::write(dir.path().join(MANIFEST_FILE), "{}").unwrap();
        std::fs::write(dir.path().join(SIGNATURE_FILE), "00").unwrap();
        assert_eq!(Manifest::of_dir(dir.path()).unwrap().sha256(), before);
        std::fs::write(dir.path().join("assets/a.js"), "A").unwrap();
        assert_ne!(Manifest::of_dir(dir.path()).unwrap().sha256(), before);
        std::fs::write(dir.path().join("assets/a.js"), "a").unwrap();
        std::fs::write(dir.path().join("assets/new.js"), "").unwrap();
        assert_ne!(Manifest::of_dir(dir.path()).unwrap().sha256(), before);
    }

    #[test]
    fn a_renamed_file_changes_the_hash() {
        let one = app(&[("assets/a.js", b"x")]);
        let two = app(&[("assets/b.js", b"x")]);
        assert_ne!(
            Manifest::of_dir(one.path()).unwrap().sha256(),
            Manifest::of_dir(two.path()).unwrap().sha256()
        );
    }

    #[test]
    fn odd_file_names_are_refused() {
        for name in ["a b.js", "new\nline.js", "back\\slash.js", "é.js"] {
            let dir = app(&[(name, b"x")]);
            let err = Manifest::of_dir(dir.path()).unwrap_err();
            assert!(matches!(err, BundleError::BadName(_)), "{name}: {err}");
        }
    }

    #[test]
    fn the_manifest_json_names_every_file_and_the_hash() {
        let dir = app(&[("index.html", b"<html>"), ("assets/a.js", b"a")]);
        let manifest = Manifest::of_dir(dir.path()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&manifest.to_json()).unwrap();
        assert_eq!(json["sha256"], hex(&manifest.sha256()));
        assert_eq!(json["files"]["assets/a.js"], hex(&Sha256::digest(b"a")));
        assert_eq!(json["files"].as_object().unwrap().len(), 2);
    }

    fn release() -> (SigningKey, ReleaseKey) {
        let key = signing_key(&[7; 32]);
        let public = release_key_of(&key);
        (key, public)
    }

    #[test]
    fn a_signature_verifies_with_its_key_only_and_over_its_bundle_only() {
        let (key, public) = release();
        let bundle = [1u8; 32];
        let signature = sign(&key, &bundle);
        public.verify(&bundle, &signature).unwrap();
        public.verify(&bundle, &signature.to_uppercase()).unwrap();
        let other = release_key_of(&signing_key(&[8; 32]));
        let err = other.verify(&bundle, &signature).unwrap_err();
        assert!(
            err.to_string().contains("not a signature of web bundle"),
            "{err}"
        );
        let err = public.verify(&[2u8; 32], &signature).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
        let mut flipped = signature.into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        let err = public
            .verify(&bundle, std::str::from_utf8(&flipped).unwrap())
            .unwrap_err();
        assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn malformed_keys_and_signatures_are_refused_with_a_reason() {
        let (_, public) = release();
        let err = public.verify(&[1; 32], "abcd").unwrap_err();
        assert!(
            err.to_string().contains("must be 128 hex digits, not 4"),
            "{err}"
        );
        let err = public.verify(&[1; 32], &"zz".repeat(64)).unwrap_err();
        assert!(err.to_string().contains("signature is not hex"), "{err}");
        let err = "12".parse::<ReleaseKey>().unwrap_err();
        assert!(
            err.to_string()
                .contains("release key must be 64 hex digits"),
            "{err}"
        );
        let err = "g".repeat(64).parse::<ReleaseKey>().unwrap_err();
        assert!(err.to_string().contains("release key is not hex"), "{err}");
        assert_eq!(public.to_string().parse::<ReleaseKey>().unwrap(), public);
    }

    #[test]
    fn the_signed_text_is_the_prefix_and_the_hex_hash() {
        let message = signed_message(&[0xab; 32]);
        assert_eq!(
            String::from_utf8(message).unwrap(),
            format!("conclave web bundle v1\n{}", "ab".repeat(32))
        );
    }

    #[test]
    fn with_a_release_key_an_unsigned_or_missigned_app_is_refused() {
        let (key, public) = release();
        let dir = app(&[("index.html", b"<html>")]);
        let bundle = WebBundle::load(dir.path(), None).unwrap();
        assert!(bundle.signature.is_none());
        let err = WebBundle::load(dir.path(), Some(public)).unwrap_err();
        assert!(matches!(err, BundleError::Unsigned { .. }), "{err}");
        std::fs::write(dir.path().join(SIGNATURE_FILE), sign(&key, &[0; 32])).unwrap();
        let err = WebBundle::load(dir.path(), Some(public)).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature { .. }), "{err}");
        let signature = sign(&key, &bundle.sha256);
        std::fs::write(dir.path().join(SIGNATURE_FILE), format!("{signature}\n")).unwrap();
        let signed = WebBundle::load(dir.path(), Some(public)).unwrap();
        assert_eq!(signed.sha256, bundle.sha256);
        assert_eq!(signed.signature.as_deref(), Some(signature.as_str()));
    }

    static BUILT_IN: &[(&str, &[u8])] = &[
        ("assets/a.js", b"a"),
        ("index.html", b"<html>"),
        (MANIFEST_FILE, b"{}"),
    ];

    #[test]
    fn the_app_built_into_the_binary_hashes_and_serves_like_the_same_folder() {
        let dir = app(&[("index.html", b"<html>"), ("assets/a.js", b"a")]);
        let from_dir = WebBundle::load(dir.path(), None).unwrap();
        let built_in = WebBundle::embedded(BUILT_IN, None).unwrap();
        assert_eq!(built_in.sha256, from_dir.sha256);
        assert_eq!(built_in.origin, "built into the binary");
        assert_eq!(built_in.file("assets/a.js").map(|b| &**b), Some(&b"a"[..]));
        assert_eq!(
            from_dir.file("index.html").map(|b| &**b),
            Some(&b"<html>"[..])
        );
        assert!(built_in.file("assets/missing.js").is_none());
        let (_, public) = release();
        let err = WebBundle::embedded(BUILT_IN, Some(public)).unwrap_err();
        assert!(err.to_string().contains("built into the binary"), "{err}");
    }

    #[test]
    fn a_folder_without_index_html_is_not_an_app() {
        let dir = app(&[("assets/a.js", b"a")]);
        let err = WebBundle::load(dir.path(), None).unwrap_err();
        assert!(matches!(err, BundleError::NoApp(_)), "{err}");
        assert!(err.to_string().contains("no index.html"), "{err}");
    }
}
