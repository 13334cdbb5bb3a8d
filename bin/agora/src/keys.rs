//! `agora keys`: an encrypted keystore, one JSON file per key, mode 0600.

use std::io::{BufRead, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agora_crypto::Keypair;
use agora_crypto::keystore::{self, KdfParams, Sealed};
use agora_primitives::{Address, from_hex, to_hex};
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

/// Passphrases come from this variable when set (scripts, CI), else from a terminal prompt.
pub const PASSPHRASE_ENV: &str = "AGORA_PASSPHRASE";

/// Manage keys.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keystore directory (default `$AGORA_HOME/keys`).
    #[arg(long, global = true, value_name = "DIR")]
    keystore: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Generate a key and store it encrypted under a passphrase.
    New {
        /// The key's name.
        name: String,
    },
    /// List the stored keys and their addresses.
    List,
    /// Print a key's address.
    Show {
        /// The key's name.
        name: String,
    },
    /// Import a secret seed (64 hex digits) read from standard input.
    Import {
        /// The name to store it under.
        name: String,
    },
    /// Print a key's secret seed (64 hex digits). Anyone who sees it controls the account.
    Export {
        /// The key's name.
        name: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    name: String,
    address: String,
    kdf: KdfFile,
    cipher: CipherFile,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfFile {
    algorithm: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherFile {
    algorithm: String,
    nonce: String,
    ciphertext: String,
}

pub fn run(args: Args) -> Result<()> {
    let dir = dir(args.keystore);
    match args.command {
        Command::New { name } => {
            let key = Keypair::try_generate().context("generating a key")?;
            let path = save(&dir, &name, &key)?;
            println!("{} {}", name, key.address());
            eprintln!("saved to {}", path.display());
        }
        Command::List => {
            let mut found = Vec::new();
            if dir.exists() {
                for entry in std::fs::read_dir(&dir)
                    .with_context(|| format!("reading keystore {}", dir.display()))?
                {
                    let path = entry?.path();
                    if path.extension().is_some_and(|e| e == "json") {
                        let file = read_file(&path)?;
                        found.push((file.name, file.address));
                    }
                }
            }
            found.sort();
            if found.is_empty() {
                eprintln!(
                    "no keys in {}; create one with `agora keys new NAME`",
                    dir.display()
                );
            }
            for (name, address) in found {
                println!("{name} {address}");
            }
        }
        Command::Show { name } => {
            let file = read_file(&key_path(&dir, &name)?)?;
            println!("{}", file.address);
        }
        Command::Import { name } => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the seed from standard input")?;
            let bytes = from_hex(line.trim())
                .ok_or_else(|| anyhow!("the seed must be 64 hexadecimal digits"))?;
            let seed: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow!("the seed must be 64 hexadecimal digits (32 bytes)"))?;
            let key = Keypair::from_seed(&seed);
            save(&dir, &name, &key)?;
            println!("{} {}", name, key.address());
        }
        Command::Export { name } => {
            let key = load(&dir, &name)?;
            println!("{}", to_hex(key.seed().as_ref()));
        }
    }
    Ok(())
}

fn key_path(dir: &Path, name: &str) -> Result<PathBuf> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        bail!("key name {name:?} is invalid: use 1 to 64 letters, digits, '-' or '_'");
    }
    Ok(dir.join(format!("{name}.json")))
}

fn passphrase(confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        return Ok(p);
    }
    let p = rpassword::prompt_password("passphrase: ")
        .with_context(|| format!("no passphrase: set {PASSPHRASE_ENV} or run in a terminal"))?;
    if confirm {
        let again =
            rpassword::prompt_password("passphrase again: ").context("reading the passphrase")?;
        if again != p {
            bail!("the passphrases differ");
        }
    }
    Ok(p)
}

fn save(dir: &Path, name: &str, key: &Keypair) -> Result<PathBuf> {
    let path = key_path(dir, name)?;
    if path.exists() {
        bail!(
            "key {name:?} already exists at {}; choose another name",
            path.display()
        );
    }
    let pass = passphrase(true)?;
    let sealed = keystore::seal(key, pass.as_bytes(), KdfParams::DEFAULT)?;
    let file = KeyFile {
        version: 1,
        name: name.to_owned(),
        address: sealed.address.to_string(),
        kdf: KdfFile {
            algorithm: "argon2id".into(),
            m_cost_kib: sealed.kdf.m_cost_kib,
            t_cost: sealed.kdf.t_cost,
            p_cost: sealed.kdf.p_cost,
            salt: to_hex(&sealed.salt),
        },
        cipher: CipherFile {
            algorithm: "xchacha20poly1305".into(),
            nonce: to_hex(&sealed.nonce),
            ciphertext: to_hex(&sealed.ciphertext),
        },
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating keystore {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting keystore {}", dir.display()))?;
    // Write a private temporary file, then rename: a crash never leaves half a key file.
    let tmp = dir.join(format!(".{name}.json.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(&file)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn read_file(path: &Path) -> Result<KeyFile> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "key file {} not found or unreadable; list keys with `agora keys list`",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("key file {} is malformed", path.display()))
}

/// Decrypt a stored key (asks for the passphrase).
pub fn load(dir: &Path, name: &str) -> Result<Keypair> {
    let path = key_path(dir, name)?;
    let file = read_file(&path)?;
    let bad = |what: &str| anyhow!("key file {} has a malformed {what}", path.display());
    if file.kdf.algorithm != "argon2id" || file.cipher.algorithm != "xchacha20poly1305" {
        bail!("key file {} uses an unknown algorithm", path.display());
    }
    let sealed = Sealed {
        address: file
            .address
            .parse::<Address>()
            .map_err(|_| bad("address"))?,
        kdf: KdfParams {
            m_cost_kib: file.kdf.m_cost_kib,
            t_cost: file.kdf.t_cost,
            p_cost: file.kdf.p_cost,
        },
        salt: from_hex(&file.kdf.salt)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("salt"))?,
        nonce: from_hex(&file.cipher.nonce)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("nonce"))?,
        ciphertext: from_hex(&file.cipher.ciphertext).ok_or_else(|| bad("ciphertext"))?,
    };
    let pass = passphrase(false)?;
    keystore::open(&sealed, pass.as_bytes()).with_context(|| format!("opening key {name:?}"))
}

/// The keystore directory from a flag or the default.
pub fn dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(crate::home::keystore)
}
