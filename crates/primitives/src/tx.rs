//! Transactions: what an account asks the ledger to do, signed, bound to one chain and a window
//! of heights.

use agora_codec::{Decode, Encode, Error, Reader, encode_bytes, encode_slice};

use crate::{Address, Amount, Hash, MAX_RECEIPTS, NetUid, SignedReceipt};

/// Longest chain id, in bytes.
pub const MAX_CHAIN_ID_BYTES: usize = 32;
/// Largest encoded signed transaction, in bytes.
pub const MAX_TX_BYTES: usize = 64 * 1024;
/// Most weights in one reveal.
pub const MAX_WEIGHTS: usize = 4096;
/// Most addresses in serve info.
pub const MAX_ADDRESSES: usize = 8;
/// Longest multiaddress string.
pub const MAX_ADDRESS_BYTES: usize = 256;
/// Longest libp2p peer id (multihash bytes).
pub const MAX_PEER_ID_BYTES: usize = 64;

/// A subnet's hyperparameters (the ledger checks their bounds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetParams {
    /// Blocks between epochs.
    pub tempo: u16,
    /// Consensus majority (`u16` proportion).
    pub kappa: u16,
    /// Bonds penalty (`u16` proportion).
    pub bonds_penalty: u16,
    /// Bond moving average, parts per million.
    pub bonds_moving_average: u64,
    /// Yuma 3 bonds.
    pub yuma3: bool,
    /// Liquid alpha.
    pub liquid_alpha: bool,
    /// Liquid alpha low (`u16` proportion).
    pub alpha_low: u16,
    /// Liquid alpha high (`u16` proportion).
    pub alpha_high: u16,
    /// Liquid alpha sigmoid steepness.
    pub alpha_sigmoid_steepness: i16,
    /// Most neurons.
    pub max_uids: u16,
    /// Most validator permits.
    pub max_validators: u16,
    /// Blocks after registration during which a neuron cannot be pruned.
    pub immunity_period: u16,
    /// Blocks without setting weights after which a neuron is inactive.
    pub activity_cutoff: u16,
    /// Fewest weights a reveal may carry.
    pub min_allowed_weights: u16,
    /// Fewest blocks between two weight settings of one neuron.
    pub weights_rate_limit: u16,
    /// Tempos between commit and reveal; 0 turns commit-reveal off.
    pub commit_reveal_period: u16,
    /// BLAKE3 of the model file the subnet's miners serve and its validators verify with
    /// (all zeros: none registered, any model). Miners registering other serve info are not
    /// the subnet's, and validators whose own model differs do not score.
    pub model_hash: Hash,
    /// The inference engine's numerics version the subnet's answers are computed with (0: none
    /// registered). Engines sharing a version compute the same bits; greedy checks hold only
    /// between them, so a validator on another version abstains instead of failing honest
    /// miners, and an answer from another version fails. The owner raises it to upgrade the
    /// subnet's engine.
    pub numerics: u32,
}

impl SubnetParams {
    /// Agora's defaults for a new subnet.
    pub fn defaults() -> Self {
        Self {
            tempo: 360,
            kappa: 32767,
            bonds_penalty: 65535,
            bonds_moving_average: 900_000,
            yuma3: true,
            liquid_alpha: false,
            alpha_low: 45875,
            alpha_high: 58982,
            alpha_sigmoid_steepness: 1000,
            max_uids: 256,
            max_validators: 64,
            immunity_period: 4096,
            activity_cutoff: 5000,
            min_allowed_weights: 1,
            weights_rate_limit: 100,
            commit_reveal_period: 1,
            model_hash: Hash::default(),
            numerics: 0,
        }
    }

    /// Whether a miner serving the model file `hash` serves this subnet's registered model
    /// (any model when none is registered).
    pub fn admits_model(&self, hash: &Hash) -> bool {
        self.model_hash == Hash::default() || self.model_hash == *hash
    }

    /// Whether an engine of numerics version `numerics` computes this subnet's numbers (any
    /// when none is registered; an engine that does not state its version, 0, only then).
    pub fn admits_numerics(&self, numerics: u32) -> bool {
        self.numerics == 0 || self.numerics == numerics
    }
}

impl Encode for SubnetParams {
    fn encode(&self, out: &mut Vec<u8>) {
        self.tempo.encode(out);
        self.kappa.encode(out);
        self.bonds_penalty.encode(out);
        self.bonds_moving_average.encode(out);
        self.yuma3.encode(out);
        self.liquid_alpha.encode(out);
        self.alpha_low.encode(out);
        self.alpha_high.encode(out);
        self.alpha_sigmoid_steepness.encode(out);
        self.max_uids.encode(out);
        self.max_validators.encode(out);
        self.immunity_period.encode(out);
        self.activity_cutoff.encode(out);
        self.min_allowed_weights.encode(out);
        self.weights_rate_limit.encode(out);
        self.commit_reveal_period.encode(out);
        self.model_hash.encode(out);
        self.numerics.encode(out);
    }
}

impl Decode for SubnetParams {
    // Thirteen 16-bit fields, a u64, two bools, the model hash, the numerics version.
    const MIN_BYTES: usize = 2 * 13 + 8 + 2 + 32 + 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            tempo: Decode::decode(r)?,
            kappa: Decode::decode(r)?,
            bonds_penalty: Decode::decode(r)?,
            bonds_moving_average: Decode::decode(r)?,
            yuma3: Decode::decode(r)?,
            liquid_alpha: Decode::decode(r)?,
            alpha_low: Decode::decode(r)?,
            alpha_high: Decode::decode(r)?,
            alpha_sigmoid_steepness: Decode::decode(r)?,
            max_uids: Decode::decode(r)?,
            max_validators: Decode::decode(r)?,
            immunity_period: Decode::decode(r)?,
            activity_cutoff: Decode::decode(r)?,
            min_allowed_weights: Decode::decode(r)?,
            weights_rate_limit: Decode::decode(r)?,
            commit_reveal_period: Decode::decode(r)?,
            model_hash: Decode::decode(r)?,
            numerics: Decode::decode(r)?,
        })
    }
}

/// How to reach a miner and what it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeInfo {
    /// libp2p peer id bytes.
    pub peer_id: Vec<u8>,
    /// Multiaddresses.
    pub addresses: Vec<String>,
    /// BLAKE3 of the model file served.
    pub model_hash: Hash,
    /// Price per 1000 tokens.
    pub price_per_1k_tokens: Amount,
}

impl Encode for ServeInfo {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_bytes(&self.peer_id, out);
        crate::encode_len_of(&self.addresses, out);
        for a in &self.addresses {
            encode_bytes(a.as_bytes(), out);
        }
        self.model_hash.encode(out);
        self.price_per_1k_tokens.encode(out);
    }
}

impl Decode for ServeInfo {
    const MIN_BYTES: usize = 4 + 4 + 32 + 16;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let peer_id = r.bytes(MAX_PEER_ID_BYTES, "serve.peer_id")?;
        let count = r.len(MAX_ADDRESSES, 4, "serve.addresses")?;
        let addresses = (0..count)
            .map(|_| r.string(MAX_ADDRESS_BYTES, "serve.address"))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            peer_id,
            addresses,
            model_hash: Decode::decode(r)?,
            price_per_1k_tokens: Decode::decode(r)?,
        })
    }
}

/// What a transaction does. The sender (the signer) is the coldkey for funds and staking, and
/// the hotkey for a neuron's own actions (serve, weights, take).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Move `amount` from the sender to `to`.
    Transfer {
        /// Recipient.
        to: Address,
        /// Amount.
        amount: Amount,
    },
    /// Stake `amount` of the sender's balance to `hotkey` (delegation when the sender does not
    /// own the hotkey).
    Stake {
        /// The hotkey staked to.
        hotkey: Address,
        /// Amount.
        amount: Amount,
    },
    /// Start unbonding `amount` of the sender's stake on `hotkey`; it returns to the balance
    /// after the unbonding period.
    Unstake {
        /// The hotkey.
        hotkey: Address,
        /// Amount.
        amount: Amount,
    },
    /// Create a subnet owned by the sender, burning the creation cost.
    SubnetCreate {
        /// Its hyperparameters.
        params: SubnetParams,
    },
    /// Replace a subnet's hyperparameters (owner only, within bounds).
    SubnetSet {
        /// The subnet.
        netuid: NetUid,
        /// The new hyperparameters.
        params: SubnetParams,
    },
    /// Register `hotkey` on a subnet, burning the registration price (at most `max_burn`).
    Register {
        /// The subnet.
        netuid: NetUid,
        /// The neuron's hotkey (the sender becomes its owner).
        hotkey: Address,
        /// The most the sender will burn.
        max_burn: Amount,
    },
    /// Publish the sender hotkey's serve info on a subnet.
    Serve {
        /// The subnet.
        netuid: NetUid,
        /// The info.
        info: ServeInfo,
    },
    /// Commit `hash = BLAKE3(netuid, uids, values, salt)` of weights to reveal later.
    CommitWeights {
        /// The subnet.
        netuid: NetUid,
        /// The commitment.
        commit: Hash,
    },
    /// Reveal committed weights (or set them directly when commit-reveal is off).
    RevealWeights {
        /// The subnet.
        netuid: NetUid,
        /// Target uids.
        uids: Vec<u16>,
        /// Weight per target.
        values: Vec<u16>,
        /// The salt of the commitment.
        salt: [u8; 32],
    },
    /// Set the sender hotkey's validator take (commission), a `u16` proportion.
    SetTake {
        /// The take.
        take: u16,
    },
    /// Move `amount` of the sender's balance into its serving escrow (what its gateway's
    /// receipts are paid from).
    EscrowDeposit {
        /// Amount.
        amount: Amount,
    },
    /// Start withdrawing `amount` from the sender's escrow; it returns to the balance after the
    /// unbonding period (so receipts already signed can still be settled).
    EscrowWithdraw {
        /// Amount.
        amount: Amount,
    },
    /// Pay miners for served requests: each receipt's cost moves from the gateway's escrow to
    /// the miner. Any bad receipt refuses the whole transaction.
    Settle {
        /// Receipts signed by their miner and countersigned by their gateway.
        receipts: Vec<SignedReceipt>,
    },
}

impl Call {
    /// The name of the kind, as used in errors and the CLI.
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Transfer { .. } => "transfer",
            Call::Stake { .. } => "stake",
            Call::Unstake { .. } => "unstake",
            Call::SubnetCreate { .. } => "subnet-create",
            Call::SubnetSet { .. } => "subnet-set",
            Call::Register { .. } => "register",
            Call::Serve { .. } => "serve",
            Call::CommitWeights { .. } => "commit-weights",
            Call::RevealWeights { .. } => "reveal-weights",
            Call::SetTake { .. } => "set-take",
            Call::EscrowDeposit { .. } => "escrow-deposit",
            Call::EscrowWithdraw { .. } => "escrow-withdraw",
            Call::Settle { .. } => "settle",
        }
    }
}

impl Encode for Call {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Call::Transfer { to, amount } => {
                out.push(0);
                to.encode(out);
                amount.encode(out);
            }
            Call::Stake { hotkey, amount } => {
                out.push(1);
                hotkey.encode(out);
                amount.encode(out);
            }
            Call::Unstake { hotkey, amount } => {
                out.push(2);
                hotkey.encode(out);
                amount.encode(out);
            }
            Call::SubnetCreate { params } => {
                out.push(3);
                params.encode(out);
            }
            Call::SubnetSet { netuid, params } => {
                out.push(4);
                netuid.encode(out);
                params.encode(out);
            }
            Call::Register {
                netuid,
                hotkey,
                max_burn,
            } => {
                out.push(5);
                netuid.encode(out);
                hotkey.encode(out);
                max_burn.encode(out);
            }
            Call::Serve { netuid, info } => {
                out.push(6);
                netuid.encode(out);
                info.encode(out);
            }
            Call::CommitWeights { netuid, commit } => {
                out.push(7);
                netuid.encode(out);
                commit.encode(out);
            }
            Call::RevealWeights {
                netuid,
                uids,
                values,
                salt,
            } => {
                out.push(8);
                netuid.encode(out);
                encode_slice(uids, out);
                encode_slice(values, out);
                salt.encode(out);
            }
            Call::SetTake { take } => {
                out.push(9);
                take.encode(out);
            }
            Call::EscrowDeposit { amount } => {
                out.push(10);
                amount.encode(out);
            }
            Call::EscrowWithdraw { amount } => {
                out.push(11);
                amount.encode(out);
            }
            Call::Settle { receipts } => {
                out.push(12);
                encode_slice(receipts, out);
            }
        }
    }
}

impl Decode for Call {
    const MIN_BYTES: usize = 3;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(match r.tag()? {
            0 => Call::Transfer {
                to: Decode::decode(r)?,
                amount: Decode::decode(r)?,
            },
            1 => Call::Stake {
                hotkey: Decode::decode(r)?,
                amount: Decode::decode(r)?,
            },
            2 => Call::Unstake {
                hotkey: Decode::decode(r)?,
                amount: Decode::decode(r)?,
            },
            3 => Call::SubnetCreate {
                params: Decode::decode(r)?,
            },
            4 => Call::SubnetSet {
                netuid: Decode::decode(r)?,
                params: Decode::decode(r)?,
            },
            5 => Call::Register {
                netuid: Decode::decode(r)?,
                hotkey: Decode::decode(r)?,
                max_burn: Decode::decode(r)?,
            },
            6 => Call::Serve {
                netuid: Decode::decode(r)?,
                info: Decode::decode(r)?,
            },
            7 => Call::CommitWeights {
                netuid: Decode::decode(r)?,
                commit: Decode::decode(r)?,
            },
            8 => Call::RevealWeights {
                netuid: Decode::decode(r)?,
                uids: r.vec(MAX_WEIGHTS, "reveal.uids")?,
                values: r.vec(MAX_WEIGHTS, "reveal.values")?,
                salt: Decode::decode(r)?,
            },
            9 => Call::SetTake {
                take: Decode::decode(r)?,
            },
            10 => Call::EscrowDeposit {
                amount: Decode::decode(r)?,
            },
            11 => Call::EscrowWithdraw {
                amount: Decode::decode(r)?,
            },
            12 => Call::Settle {
                receipts: r.vec(MAX_RECEIPTS, "settle.receipts")?,
            },
            tag => return Err(Error::InvalidTag { what: "call", tag }),
        })
    }
}

/// An unsigned transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The chain it is valid on (replay protection across chains).
    pub chain_id: String,
    /// The signer.
    pub sender: Address,
    /// The sender's next nonce (replay protection in time; strictly increasing by one).
    pub nonce: u64,
    /// Fee paid to the block (a share burned, the rest to the proposer).
    pub fee: Amount,
    /// Last height at which it may be included.
    pub expiry_height: u64,
    /// What it does.
    pub call: Call,
}

impl Encode for Transaction {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_bytes(self.chain_id.as_bytes(), out);
        self.sender.encode(out);
        self.nonce.encode(out);
        self.fee.encode(out);
        self.expiry_height.encode(out);
        self.call.encode(out);
    }
}

impl Decode for Transaction {
    const MIN_BYTES: usize = 4 + 32 + 8 + 16 + 8 + 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            chain_id: r.string(MAX_CHAIN_ID_BYTES, "chain_id")?,
            sender: Decode::decode(r)?,
            nonce: Decode::decode(r)?,
            fee: Decode::decode(r)?,
            expiry_height: Decode::decode(r)?,
            call: Decode::decode(r)?,
        })
    }
}

/// A transaction with the sender's Ed25519 signature over [`Transaction::signing_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTransaction {
    /// The transaction.
    pub tx: Transaction,
    /// Ed25519 signature by `tx.sender`.
    pub signature: [u8; 64],
}

/// Domain separation for transaction signatures.
pub const TX_SIGNING_DOMAIN: &[u8] = b"agora/tx/v1\0";

impl Transaction {
    /// What the sender signs: a domain tag, then the canonical encoding.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = TX_SIGNING_DOMAIN.to_vec();
        self.encode(&mut out);
        out
    }
}

impl Encode for SignedTransaction {
    fn encode(&self, out: &mut Vec<u8>) {
        self.tx.encode(out);
        self.signature.encode(out);
    }
}

impl Decode for SignedTransaction {
    const MIN_BYTES: usize = Transaction::MIN_BYTES + 64;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            tx: Decode::decode(r)?,
            signature: Decode::decode(r)?,
        })
    }
}

impl SignedTransaction {
    /// Decode one signed transaction from exactly `bytes`, refusing more than [`MAX_TX_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(Error::TooLong {
                what: "signed transaction",
                len: bytes.len() as u64,
                max: MAX_TX_BYTES as u64,
            });
        }
        agora_codec::decode_exact(bytes)
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        agora_codec::encode_to_vec(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_codec::{decode_exact, encode_to_vec};

    #[test]
    fn subnet_params_carry_the_registered_model_and_numerics() {
        let params = SubnetParams {
            model_hash: Hash([7; 32]),
            numerics: 2,
            ..SubnetParams::defaults()
        };
        let bytes = encode_to_vec(&params);
        assert_eq!(
            bytes.len(),
            SubnetParams::MIN_BYTES,
            "every field has a fixed size"
        );
        assert_eq!(decode_exact::<SubnetParams>(&bytes).unwrap(), params);
        // Cut short, the encoding is refused rather than read with defaults.
        assert!(decode_exact::<SubnetParams>(&bytes[..bytes.len() - 1]).is_err());

        assert!(params.admits_model(&Hash([7; 32])));
        assert!(!params.admits_model(&Hash([8; 32])));
        assert!(params.admits_numerics(2));
        assert!(!params.admits_numerics(1));
        assert!(
            !params.admits_numerics(0),
            "an engine that does not say is not admitted"
        );
        // Nothing registered: any model, any numerics.
        let open = SubnetParams::defaults();
        assert!(open.admits_model(&Hash([8; 32])) && open.admits_numerics(0));
        assert!(open.admits_numerics(5));
    }
}
