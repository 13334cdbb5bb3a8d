//! `agora epoch`: run one epoch from JSON, or check conformance vectors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agora_incentive::{epoch, json};

/// Run one epoch (`--input FILE`) or check vectors (`--check FILE...`).
///
/// Exit codes: 0 success; 1 a vector's output differs from its `expected`; 2 malformed input.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["input", "check"])))]
pub struct Args {
    /// An epoch input object, or a vector file (an object with `input`); prints the output JSON.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Vector files to run and compare with their `expected` output.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    check: Vec<PathBuf>,
}

const MALFORMED: u8 = 2;

pub fn run(args: Args) -> ExitCode {
    if let Some(path) = args.input {
        return match load(&path) {
            Ok(vector) => match epoch(&vector.input) {
                Ok(out) => {
                    println!("{}", json::output_to_json(&out));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    ExitCode::from(MALFORMED)
                }
            },
            Err(msg) => {
                eprintln!("error: {msg}");
                ExitCode::from(MALFORMED)
            }
        };
    }
    let (mut passed, mut failed, mut malformed) = (0usize, 0usize, 0usize);
    for path in &args.check {
        let vector = match load(path) {
            Ok(v) => v,
            Err(msg) => {
                println!("ERROR {}", msg);
                malformed += 1;
                continue;
            }
        };
        let name = vector.name.clone().unwrap_or_else(|| stem(path));
        let Some(want) = vector.expected else {
            println!("ERROR {name}: no `expected` object to compare with; use --input to run it");
            malformed += 1;
            continue;
        };
        match epoch(&vector.input) {
            Ok(got) => match json::first_mismatch(&got, &want) {
                None => {
                    println!("ok {name}");
                    passed += 1;
                }
                Some((field, g, w)) => {
                    println!("MISMATCH {name} {field}: got {g} want {w}");
                    failed += 1;
                }
            },
            Err(e) => {
                println!("ERROR {name}: input.{e}");
                malformed += 1;
            }
        }
    }
    println!("{passed} passed, {} failed", failed + malformed);
    if malformed > 0 {
        ExitCode::from(MALFORMED)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into(),
    )
}

fn load(path: &Path) -> Result<json::Vector, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the file: {e}", path.display()))?;
    json::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}
