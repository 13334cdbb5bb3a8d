//! Where the CLI keeps things: `$AGORA_HOME` (default `~/.agora`), with `keys/` and `data/`.

use std::path::PathBuf;

/// The Agora home directory.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("AGORA_HOME") {
        return PathBuf::from(h);
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".agora"),
        None => PathBuf::from(".agora"),
    }
}

/// The default keystore directory.
pub fn keystore() -> PathBuf {
    home().join("keys")
}

/// The default data directory.
pub fn data_dir() -> PathBuf {
    home().join("data")
}
