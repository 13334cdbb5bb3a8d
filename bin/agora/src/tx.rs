//! `agora tx`: build and sign a transaction; print it as hex, or with `--node URL` submit it
//! through a node's chain API and wait until it is included (or rejected).

use std::path::PathBuf;

use agora_crypto::{sign_tx, tx_hash, weights_commit};
use agora_primitives::{
    Address, Amount, Call, Hash, NetUid, ServeInfo, SubnetParams, Transaction, from_hex, to_hex,
};
use anyhow::{Context, Result, anyhow, bail};

use agora_chain::genesis_file::SubnetParamsFile;

/// Build and sign a transaction.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The signing key's name in the keystore.
    #[arg(long, global = true, value_name = "NAME")]
    from: Option<String>,
    /// Keystore directory (default `$AGORA_HOME/keys`).
    #[arg(long, global = true, value_name = "DIR")]
    keystore: Option<PathBuf>,
    /// A node's data directory, to read the chain id, the next nonce and the height.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Chain id (default: from --data-dir, else "agora-devnet").
    #[arg(long, global = true)]
    chain_id: Option<String>,
    /// Nonce (default: the account's next nonce from --data-dir).
    #[arg(long, global = true)]
    nonce: Option<u64>,
    /// Fee in AGORA.
    #[arg(long, global = true, default_value = "0.000001")]
    fee: String,
    /// Last height at which the transaction may be included (default: height + 100, or 100).
    #[arg(long, global = true)]
    expiry_height: Option<u64>,
    /// Submit through this node's chain API (chain id, nonce and height come from it) and wait
    /// for inclusion.
    #[arg(long, global = true, value_name = "URL")]
    node: Option<String>,
    /// With --node: return once the node accepts the transaction, without waiting.
    #[arg(long, global = true)]
    no_wait: bool,
    #[command(subcommand)]
    call: CallArgs,
}

#[derive(Debug, clap::Subcommand)]
enum CallArgs {
    /// Send AGORA to an address.
    Transfer {
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: String,
    },
    /// Stake to a hotkey.
    Stake {
        #[arg(long)]
        hotkey: String,
        #[arg(long)]
        amount: String,
    },
    /// Start unbonding stake from a hotkey.
    Unstake {
        #[arg(long)]
        hotkey: String,
        #[arg(long)]
        amount: String,
    },
    /// Create a subnet (burns the creation cost).
    SubnetCreate {
        /// JSON object of hyperparameters; missing fields take the defaults.
        #[arg(long, value_name = "FILE")]
        params: Option<PathBuf>,
    },
    /// Change a subnet's hyperparameters (owner only).
    SubnetSet {
        #[arg(long)]
        netuid: NetUid,
        /// JSON object of hyperparameters; missing fields keep the current values (read from
        /// --data-dir, else from --node) or, with neither, take the defaults.
        #[arg(long, value_name = "FILE")]
        params: PathBuf,
    },
    /// Register a hotkey on a subnet (burns the registration price).
    Register {
        #[arg(long)]
        netuid: NetUid,
        #[arg(long)]
        hotkey: String,
        /// The most to burn, in AGORA.
        #[arg(long)]
        max_burn: String,
    },
    /// Publish serve info for the signing hotkey.
    Serve {
        #[arg(long)]
        netuid: NetUid,
        /// libp2p peer id bytes, hex.
        #[arg(long)]
        peer_id: String,
        /// Multiaddress (repeatable).
        #[arg(long = "address")]
        addresses: Vec<String>,
        /// BLAKE3 of the model file, hex.
        #[arg(long)]
        model_hash: String,
        /// Price per 1000 tokens, in AGORA.
        #[arg(long)]
        price: String,
    },
    /// Commit a hash of weights (reveal them later with the same uids, values and salt).
    CommitWeights {
        #[arg(long)]
        netuid: NetUid,
        /// Comma-separated uids.
        #[arg(long)]
        uids: String,
        /// Comma-separated weights (u16).
        #[arg(long)]
        values: String,
        /// 32-byte salt, hex.
        #[arg(long)]
        salt: String,
    },
    /// Move balance into the serving escrow that pays for this account's requests.
    EscrowDeposit {
        #[arg(long)]
        amount: String,
    },
    /// Start withdrawing escrow (back to the balance after the unbonding period).
    EscrowWithdraw {
        #[arg(long)]
        amount: String,
    },
    /// Reveal committed weights (or set them when commit-reveal is off).
    RevealWeights {
        #[arg(long)]
        netuid: NetUid,
        #[arg(long)]
        uids: String,
        #[arg(long)]
        values: String,
        #[arg(long)]
        salt: String,
    },
}

fn addr(text: &str, what: &str) -> Result<Address> {
    text.parse().map_err(|e| anyhow!("--{what}: {e}"))
}

fn amount(text: &str, what: &str) -> Result<Amount> {
    text.parse().map_err(|e| anyhow!("--{what}: {e}"))
}

fn list(text: &str, what: &str) -> Result<Vec<u16>> {
    text.split(',')
        .map(|t| {
            t.trim()
                .parse::<u16>()
                .map_err(|_| anyhow!("--{what}: {t:?} is not a number from 0 to 65535"))
        })
        .collect()
}

fn salt(text: &str) -> Result<[u8; 32]> {
    from_hex(text)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("--salt must be 64 hexadecimal digits"))
}

fn params_file(path: &PathBuf) -> Result<SubnetParamsFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    SubnetParamsFile::parse(&text).with_context(|| format!("in {}", path.display()))
}

pub fn run(args: Args) -> Result<()> {
    let state = match &args.data_dir {
        Some(dir) => Some(crate::query::open_state(Some(dir.clone()))?),
        None => None,
    };
    let Some(from) = args.from.as_deref() else {
        bail!("--from NAME is required: the keystore key that signs");
    };
    let runtime = match &args.node {
        Some(_) => Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?,
        ),
        None => None,
    };
    let call = match &args.call {
        CallArgs::Transfer { to, amount: a } => Call::Transfer {
            to: addr(to, "to")?,
            amount: amount(a, "amount")?,
        },
        CallArgs::Stake { hotkey, amount: a } => Call::Stake {
            hotkey: addr(hotkey, "hotkey")?,
            amount: amount(a, "amount")?,
        },
        CallArgs::Unstake { hotkey, amount: a } => Call::Unstake {
            hotkey: addr(hotkey, "hotkey")?,
            amount: amount(a, "amount")?,
        },
        CallArgs::SubnetCreate { params } => {
            let file = match params {
                Some(p) => params_file(p)?,
                None => SubnetParamsFile::default(),
            };
            Call::SubnetCreate {
                params: file.over(SubnetParams::defaults())?,
            }
        }
        CallArgs::SubnetSet { netuid, params } => {
            // Fields the file leaves out keep the subnet's current values: from the data
            // directory, else from the node the transaction goes to (a change of one field
            // must not reset the others), else the defaults.
            let current = match (&state, &args.node, &runtime) {
                (Some(s), _, _) => s.subnets.get(netuid).map(|s| s.params.clone()),
                (None, Some(url), Some(rt)) => {
                    rt.block_on(crate::node::remote_subnet_params(url, *netuid))?
                }
                _ => None,
            };
            let base = current.unwrap_or_else(SubnetParams::defaults);
            Call::SubnetSet {
                netuid: *netuid,
                params: params_file(params)?.over(base)?,
            }
        }
        CallArgs::Register {
            netuid,
            hotkey,
            max_burn,
        } => Call::Register {
            netuid: *netuid,
            hotkey: addr(hotkey, "hotkey")?,
            max_burn: amount(max_burn, "max-burn")?,
        },
        CallArgs::Serve {
            netuid,
            peer_id,
            addresses,
            model_hash,
            price,
        } => Call::Serve {
            netuid: *netuid,
            info: ServeInfo {
                peer_id: from_hex(peer_id).ok_or_else(|| anyhow!("--peer-id must be hex"))?,
                addresses: addresses.clone(),
                model_hash: model_hash
                    .parse::<Hash>()
                    .map_err(|e| anyhow!("--model-hash: {e}"))?,
                price_per_1k_tokens: amount(price, "price")?,
            },
        },
        CallArgs::CommitWeights {
            netuid,
            uids,
            values,
            salt: s,
        } => {
            let (uids, values, s) = (list(uids, "uids")?, list(values, "values")?, salt(s)?);
            let commit = weights_commit(*netuid, &uids, &values, &s);
            eprintln!("commit {commit}: reveal with the same --uids, --values and --salt");
            Call::CommitWeights {
                netuid: *netuid,
                commit,
            }
        }
        CallArgs::EscrowDeposit { amount: a } => Call::EscrowDeposit {
            amount: amount(a, "amount")?,
        },
        CallArgs::EscrowWithdraw { amount: a } => Call::EscrowWithdraw {
            amount: amount(a, "amount")?,
        },
        CallArgs::RevealWeights {
            netuid,
            uids,
            values,
            salt: s,
        } => Call::RevealWeights {
            netuid: *netuid,
            uids: list(uids, "uids")?,
            values: list(values, "values")?,
            salt: salt(s)?,
        },
    };
    let key = crate::keys::load(&crate::keys::dir(args.keystore.clone()), from)?;
    let sender = key.address();
    let remote = match (&args.node, &runtime) {
        (Some(url), Some(rt)) => Some(rt.block_on(crate::node::remote_account(url, &sender))?),
        _ => None,
    };
    let chain_id = match (&args.chain_id, &state, &remote) {
        (Some(c), _, _) => c.clone(),
        (None, _, Some(r)) => r.chain_id.clone(),
        (None, Some(s), None) => s.chain_id.clone(),
        (None, None, None) => "agora-devnet".into(),
    };
    let nonce = match (args.nonce, &state, &remote) {
        (Some(n), _, _) => n,
        (None, _, Some(r)) => r.next_nonce,
        (None, Some(s), None) => s.account(&sender).nonce,
        (None, None, None) => {
            bail!(
                "the nonce is unknown: pass --nonce N, --node URL or --data-dir of a node to read it"
            )
        }
    };
    let height = match (&remote, &state) {
        (Some(r), _) => r.height,
        (None, Some(s)) => s.height,
        (None, None) => 0,
    };
    let expiry_height = args.expiry_height.unwrap_or(height + 100);
    let tx = Transaction {
        chain_id,
        sender,
        nonce,
        fee: amount(&args.fee, "fee")?,
        expiry_height,
        call,
    };
    let signed = sign_tx(&key, tx);
    let bytes = signed.to_bytes();
    if bytes.len() > agora_primitives::MAX_TX_BYTES {
        bail!(
            "the transaction is {} bytes; the limit is {}",
            bytes.len(),
            agora_primitives::MAX_TX_BYTES
        );
    }
    if let (Some(url), Some(rt)) = (&args.node, &runtime) {
        return rt.block_on(crate::node::submit_and_wait(
            url,
            &to_hex(&bytes),
            !args.no_wait,
        ));
    }
    println!("{}", to_hex(&bytes));
    eprintln!(
        "tx {} ({}, nonce {})",
        tx_hash(&signed),
        signed.tx.call.kind(),
        signed.tx.nonce
    );
    Ok(())
}
