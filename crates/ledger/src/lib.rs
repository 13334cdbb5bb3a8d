//! The deterministic state machine every chain validator runs: apply a block, get a state root
//! and events.
//!
//! Stability: consensus-visible; any change to what a block does is a hard fork.
//!
//! # Design
//! [`apply_block`] takes the state and a block and returns the next state, its root and the
//! events, or a [`BlockError`] naming the first bad transaction. It never changes its input: a
//! refused block leaves the state exactly as it was. One module per concern: [`balances`]
//! (transfers, fees), [`staking`] (delegation, unbonding, take), [`subnets`], [`neurons`]
//! (registration burn, pruning, serve info), [`weights`] (commit-reveal, max-upscaling),
//! [`emission`] (issuance, the Yuma epoch every `tempo` blocks, payouts), [`genesis`].
//!
//! Transaction checks, in order: size, chain id, expiry, nonce (stale or future), signature
//! (batch-verified per block), fee, then the call's own rules.
//!
//! # Invariants
//! - Pure: no I/O, no clock, no randomness, no floats; ordered maps only.
//! - Conservation: balances + stakes + unbonding + pending subnet emission + burned
//!   = genesis supply + issued, after every block.
//! - Each sender's nonce increases by exactly one per included transaction.
//!
//! # Example
//! ```
//! use agora_crypto::{Keypair, sign_tx};
//! use agora_ledger::{apply_block, build_block, genesis::Genesis, state::ChainParams};
//! use agora_primitives::{Amount, Call, Hash, Transaction};
//! let alice = Keypair::from_seed(&[1; 32]);
//! let bob = Keypair::from_seed(&[2; 32]).address();
//! let state = Genesis {
//!     chain_id: "doc".into(), params: ChainParams::devnet(),
//!     balances: vec![(alice.address(), Amount::agora(10))], stakes: vec![], subnets: vec![],
//! }.into_state().unwrap();
//! let tx = sign_tx(&alice, Transaction {
//!     chain_id: "doc".into(), sender: alice.address(), nonce: 0, fee: Amount(1_000),
//!     expiry_height: 10, call: Call::Transfer { to: bob, amount: Amount::agora(1) },
//! });
//! // The proposer builds the block (filling in the state root); every validator applies it.
//! let (block, _) = build_block(&state, vec![tx], bob, Hash::default()).unwrap();
//! let applied = apply_block(&state, &block).unwrap();
//! assert_eq!(applied.state.account(&bob).balance, Amount(1_000_000_000 + 500));
//! assert_eq!(applied.root, block.header.state_root);
//! ```
#![forbid(unsafe_code)]

pub mod balances;
pub mod emission;
pub mod entries;
mod error;
pub mod escrow;
pub mod genesis;
pub mod neurons;
pub mod staking;
pub mod state;
pub mod subnets;
pub mod weights;

use agora_codec::Encode;
use agora_primitives::{
    Address, Amount, Block, Call, Hash, MAX_TX_BYTES, NetUid, SignedTransaction,
};

pub use error::{BlockError, TxError};
pub use state::State;

/// Something a block did, for clients and indexers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A transaction was applied.
    TxApplied {
        /// Its hash.
        hash: Hash,
        /// Its sender.
        sender: Address,
        /// The fee paid.
        fee: Amount,
    },
    /// Funds moved.
    Transfer {
        /// From.
        from: Address,
        /// To.
        to: Address,
        /// Amount.
        amount: Amount,
    },
    /// Stake added.
    Staked {
        /// Staker.
        coldkey: Address,
        /// Hotkey.
        hotkey: Address,
        /// Amount.
        amount: Amount,
    },
    /// Balance moved into serving escrow.
    EscrowDeposited {
        /// The account.
        account: Address,
        /// Amount.
        amount: Amount,
    },
    /// Escrow moved to unbonding.
    EscrowWithdrawn {
        /// The account.
        account: Address,
        /// Amount.
        amount: Amount,
        /// When it returns to the balance.
        release_height: u64,
    },
    /// A receipt's cost moved from a gateway's escrow to a miner.
    ReceiptPaid {
        /// Receipt id.
        id: Hash,
        /// Paid to.
        miner: Address,
        /// Paid from the escrow of.
        gateway: Address,
        /// Amount.
        amount: Amount,
    },
    /// Stake moved to unbonding.
    Unstaked {
        /// Staker.
        coldkey: Address,
        /// Hotkey.
        hotkey: Address,
        /// Amount.
        amount: Amount,
        /// When it returns.
        release_height: u64,
    },
    /// Unbonded stake returned to a balance.
    Unbonded {
        /// Owner.
        coldkey: Address,
        /// Amount.
        amount: Amount,
    },
    /// A subnet was created.
    SubnetCreated {
        /// Id.
        netuid: NetUid,
        /// Owner.
        owner: Address,
    },
    /// A neuron registered.
    Registered {
        /// Subnet.
        netuid: NetUid,
        /// Its uid.
        uid: u16,
        /// Its hotkey.
        hotkey: Address,
        /// Price burned.
        burned: Amount,
    },
    /// A neuron was replaced by a new registration.
    Deregistered {
        /// Subnet.
        netuid: NetUid,
        /// The uid.
        uid: u16,
        /// The old hotkey.
        hotkey: Address,
    },
    /// A neuron's weights were stored.
    WeightsSet {
        /// Subnet.
        netuid: NetUid,
        /// The uid.
        uid: u16,
    },
    /// An epoch paid a neuron.
    EpochPaid {
        /// Subnet.
        netuid: NetUid,
        /// The uid.
        uid: u16,
        /// Its hotkey.
        hotkey: Address,
        /// Paid as a miner.
        server: Amount,
        /// Paid as a validator (take plus delegators' shares).
        validator: Amount,
    },
    /// Emission accrued to a subnet.
    Issued {
        /// Subnet.
        netuid: NetUid,
        /// Amount.
        amount: Amount,
    },
}

/// The result of applying a block.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The state after the block.
    pub state: State,
    /// Its root.
    pub root: Hash,
    /// What happened.
    pub events: Vec<Event>,
}

/// Apply a block to a state. The input state is never modified.
pub fn apply_block(state: &State, block: &Block) -> Result<Applied, BlockError> {
    let applied = execute(state, block)?;
    if applied.root != block.header.state_root {
        return Err(BlockError::StateRootMismatch {
            header: block.header.state_root,
            computed: applied.root,
        });
    }
    Ok(applied)
}

/// Everything [`apply_block`] does except comparing the header's state root.
fn execute(state: &State, block: &Block) -> Result<Applied, BlockError> {
    let header = &block.header;
    if header.chain_id != state.chain_id {
        return Err(BlockError::WrongChain {
            got: header.chain_id.clone(),
            want: state.chain_id.clone(),
        });
    }
    let height = state.height + 1;
    if header.height != height {
        return Err(BlockError::WrongHeight {
            got: header.height,
            want: height,
        });
    }
    if agora_crypto::tx_root(&block.txs) != header.tx_root {
        return Err(BlockError::TxRootMismatch);
    }
    let tx_error = |index: usize, error: TxError| BlockError::Tx {
        index,
        hash: agora_crypto::tx_hash(&block.txs[index]),
        error: Box::new(error),
    };
    let mut next = state.clone();
    next.height = height;
    let mut events = Vec::with_capacity(block.txs.len() * 2 + 4);
    // Stateless checks first, then one batch signature verification for the whole block.
    for (i, tx) in block.txs.iter().enumerate() {
        check_stateless(&next, tx, height).map_err(|e| tx_error(i, e))?;
    }
    agora_crypto::verify_batch(&block.txs)
        .map_err(|(i, _)| tx_error(i, TxError::BadSignature(block.txs[i].tx.sender)))?;
    for (i, tx) in block.txs.iter().enumerate() {
        apply_checked(&mut next, tx, height, &header.proposer, &mut events)
            .map_err(|e| tx_error(i, e))?;
    }
    next.release_unbonding(height, &mut events);
    next.prune_settled(height);
    next.decay_burns();
    next.issue(&mut events);
    next.run_epochs(height, &mut events);
    let root = next.root();
    Ok(Applied {
        state: next,
        root,
        events,
    })
}

/// Build the next block from transactions, as a proposer does: apply them, then write the
/// resulting state root into the header. Returns the block and what applying it gives.
pub fn build_block(
    state: &State,
    txs: Vec<SignedTransaction>,
    proposer: Address,
    parent: Hash,
) -> Result<(Block, Applied), BlockError> {
    let mut block = Block {
        header: agora_primitives::Header {
            chain_id: state.chain_id.clone(),
            height: state.height + 1,
            parent,
            proposer,
            tx_root: agora_crypto::tx_root(&txs),
            state_root: Hash::default(),
        },
        txs,
    };
    let applied = execute(state, &block)?;
    block.header.state_root = applied.root;
    Ok((block, applied))
}

/// Apply one transaction alone (signature included), for the mempool's admission check. The
/// state is modified only on success.
pub fn apply_tx(
    state: &mut State,
    tx: &SignedTransaction,
    height: u64,
    proposer: &Address,
) -> Result<Vec<Event>, TxError> {
    check_stateless(state, tx, height)?;
    agora_crypto::verify_tx(tx).map_err(|_| TxError::BadSignature(tx.tx.sender))?;
    let mut scratch = state.clone();
    let mut events = Vec::new();
    apply_checked(&mut scratch, tx, height, proposer, &mut events)?;
    *state = scratch;
    Ok(events)
}

/// The checks a transaction must pass before it may wait in a mempool for block `height`:
/// size, chain, expiry and signature. Nonce and balance depend on what is applied before it,
/// so the mempool checks those against its own view.
pub fn precheck(state: &State, tx: &SignedTransaction, height: u64) -> Result<(), TxError> {
    check_stateless(state, tx, height)?;
    agora_crypto::verify_tx(tx).map_err(|_| TxError::BadSignature(tx.tx.sender))
}

fn check_stateless(state: &State, signed: &SignedTransaction, height: u64) -> Result<(), TxError> {
    let mut bytes = Vec::with_capacity(256);
    signed.encode(&mut bytes);
    if bytes.len() > MAX_TX_BYTES {
        return Err(TxError::Oversized {
            len: bytes.len(),
            max: MAX_TX_BYTES,
        });
    }
    let tx = &signed.tx;
    if tx.chain_id != state.chain_id {
        return Err(TxError::WrongChain {
            got: tx.chain_id.clone(),
            want: state.chain_id.clone(),
        });
    }
    if height > tx.expiry_height {
        return Err(TxError::Expired {
            expiry: tx.expiry_height,
            height,
        });
    }
    Ok(())
}

fn apply_checked(
    state: &mut State,
    signed: &SignedTransaction,
    height: u64,
    proposer: &Address,
    events: &mut Vec<Event>,
) -> Result<(), TxError> {
    let tx = &signed.tx;
    let sender = tx.sender;
    let want = state.account(&sender).nonce;
    if tx.nonce < want {
        return Err(TxError::StaleNonce {
            sender,
            got: tx.nonce,
            want,
        });
    }
    if tx.nonce > want {
        return Err(TxError::FutureNonce {
            sender,
            got: tx.nonce,
            want,
        });
    }
    // The whole cost of the transaction must be representable before anything moves.
    let moved = match &tx.call {
        Call::Transfer { amount, .. }
        | Call::Stake { amount, .. }
        | Call::EscrowDeposit { amount } => *amount,
        Call::Register { max_burn, .. } => *max_burn,
        _ => Amount::ZERO,
    };
    tx.fee
        .checked_add(moved)
        .ok_or(TxError::AmountOverflow("fee + amount"))?;
    state.charge_fee(&sender, tx.fee, proposer)?;
    match &tx.call {
        Call::Transfer { to, amount } => state.transfer(&sender, to, *amount, events)?,
        Call::Stake { hotkey, amount } => state.stake(&sender, hotkey, *amount, events)?,
        Call::Unstake { hotkey, amount } => {
            state.unstake(&sender, hotkey, *amount, height, events)?
        }
        Call::SubnetCreate { params } => {
            state.create_subnet(&sender, params.clone(), events)?;
        }
        Call::SubnetSet { netuid, params } => state.set_subnet(&sender, *netuid, params.clone())?,
        Call::Register {
            netuid,
            hotkey,
            max_burn,
        } => {
            state.register(&sender, *netuid, hotkey, *max_burn, height, events)?;
        }
        Call::Serve { netuid, info } => state.serve(&sender, *netuid, info.clone())?,
        Call::CommitWeights { netuid, commit } => {
            state.commit_weights(&sender, *netuid, *commit, height)?
        }
        Call::RevealWeights {
            netuid,
            uids,
            values,
            salt,
        } => state.reveal_weights(&sender, *netuid, uids, values, salt, height, events)?,
        Call::SetTake { take } => state.set_take(&sender, *take)?,
        Call::EscrowDeposit { amount } => state.escrow_deposit(&sender, *amount, events)?,
        Call::EscrowWithdraw { amount } => {
            state.escrow_withdraw(&sender, *amount, height, events)?
        }
        Call::Settle { receipts } => state.settle(receipts, height, events)?,
    }
    state.accounts.entry(sender).or_default().nonce = want + 1;
    events.push(Event::TxApplied {
        hash: agora_crypto::tx_hash(signed),
        sender,
        fee: tx.fee,
    });
    Ok(())
}
