//! Typed errors: why a transaction or a block is refused.

use agora_primitives::{Address, Amount, Hash, NetUid};

/// Why a transaction is refused. Each kind of bad transaction has its own variant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The signature does not verify.
    #[error("bad signature from {0}; sign the exact transaction with the sender's key")]
    BadSignature(Address),
    /// Signed for another chain.
    #[error("transaction is for chain {got:?}, this chain is {want:?}")]
    WrongChain {
        /// The transaction's chain id.
        got: String,
        /// This chain's id.
        want: String,
    },
    /// Nonce already used.
    #[error("nonce {got} already used by {sender}; the next nonce is {want}")]
    StaleNonce {
        /// Sender.
        sender: Address,
        /// Nonce given.
        got: u64,
        /// Nonce expected.
        want: u64,
    },
    /// Nonce ahead of the account.
    #[error("nonce {got} is ahead of {sender}'s next nonce {want}; send the missing ones first")]
    FutureNonce {
        /// Sender.
        sender: Address,
        /// Nonce given.
        got: u64,
        /// Nonce expected.
        want: u64,
    },
    /// Past its expiry height.
    #[error("transaction expired at height {expiry}, the block is at {height}; sign a new one")]
    Expired {
        /// Expiry height.
        expiry: u64,
        /// Block height.
        height: u64,
    },
    /// Not enough balance.
    #[error("{account} has {have} but needs {need}")]
    InsufficientBalance {
        /// The account.
        account: Address,
        /// Balance.
        have: Amount,
        /// Needed.
        need: Amount,
    },
    /// Not enough stake.
    #[error("{coldkey} has {have} staked on {hotkey} but asked for {need}")]
    InsufficientStake {
        /// Staker.
        coldkey: Address,
        /// Hotkey.
        hotkey: Address,
        /// Stake.
        have: Amount,
        /// Needed.
        need: Amount,
    },
    /// An amount computation overflowed.
    #[error("amount overflow in {0}")]
    AmountOverflow(&'static str),
    /// The encoded transaction is too large.
    #[error("transaction is {len} bytes; the limit is {max}")]
    Oversized {
        /// Size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A zero amount where a positive one is needed.
    #[error("{0}: amount must be positive")]
    ZeroAmount(&'static str),
    /// No such subnet.
    #[error("subnet {0} does not exist")]
    UnknownSubnet(NetUid),
    /// Only the subnet owner may do this.
    #[error("only the owner of subnet {netuid} may change it")]
    NotSubnetOwner {
        /// Subnet.
        netuid: NetUid,
    },
    /// A hyperparameter is outside its bounds.
    #[error("hyperparameter {name} = {value} is out of bounds ({bounds})")]
    ParamOutOfBounds {
        /// Name.
        name: &'static str,
        /// Value given.
        value: i64,
        /// The allowed range.
        bounds: &'static str,
    },
    /// The hotkey is already registered on the subnet.
    #[error("hotkey {hotkey} is already registered on subnet {netuid}")]
    DuplicateRegistration {
        /// Subnet.
        netuid: NetUid,
        /// Hotkey.
        hotkey: Address,
    },
    /// The hotkey belongs to another coldkey.
    #[error("hotkey {hotkey} is owned by another coldkey")]
    HotkeyOwnedByOther {
        /// Hotkey.
        hotkey: Address,
    },
    /// The registration price is above the caller's limit.
    #[error("registration costs {price}, above max_burn {max_burn}; retry with a higher max_burn")]
    BurnTooHigh {
        /// Price.
        price: Amount,
        /// Limit.
        max_burn: Amount,
    },
    /// Full and every neuron is immune.
    #[error("subnet {0} is full and every neuron is within its immunity period")]
    SubnetFull(NetUid),
    /// The sender hotkey has no uid on the subnet.
    #[error("hotkey {hotkey} is not registered on subnet {netuid}")]
    NotRegistered {
        /// Subnet.
        netuid: NetUid,
        /// Hotkey.
        hotkey: Address,
    },
    /// Malformed weights.
    #[error("weights: {0}")]
    InvalidWeights(&'static str),
    /// A weight names a uid that does not exist.
    #[error("weights name uid {uid} but subnet has {n} uids")]
    UnknownUid {
        /// The uid.
        uid: u16,
        /// Neurons on the subnet.
        n: u16,
    },
    /// Fewer weights than the subnet requires.
    #[error("{got} non-zero weights; subnet requires at least {min}")]
    TooFewWeights {
        /// Given.
        got: usize,
        /// Required.
        min: u16,
    },
    /// Weights set again too soon.
    #[error("weights set {since} blocks ago; wait until {limit} blocks have passed")]
    RateLimited {
        /// Blocks since last.
        since: u64,
        /// Limit.
        limit: u16,
    },
    /// The reveal does not hash to the commit.
    #[error("revealed weights do not match the commit {0}")]
    RevealMismatch(Hash),
    /// Too early to reveal.
    #[error("reveal too early: the reveal window opens at block {opens}")]
    RevealTooEarly {
        /// Window start.
        opens: u64,
    },
    /// Too late to reveal.
    #[error("reveal too late: the reveal window closed at block {closed}; commit again")]
    RevealTooLate {
        /// Window end.
        closed: u64,
    },
    /// Direct weight setting while commit-reveal is on.
    #[error("subnet {0} uses commit-reveal: commit a hash first")]
    CommitRequired(NetUid),
    /// Take above the maximum.
    #[error("take {take} exceeds the maximum {max}")]
    TakeTooHigh {
        /// Given.
        take: u16,
        /// Maximum.
        max: u16,
    },
    /// Not enough escrow.
    #[error(
        "escrow of {account} is {have}, {need} needed; deposit more with an escrow-deposit transaction"
    )]
    InsufficientEscrow {
        /// The account.
        account: Address,
        /// Its escrow.
        have: Amount,
        /// Needed.
        need: Amount,
    },
    /// A receipt in a settlement is not acceptable.
    #[error("receipt {index}: {reason}")]
    InvalidReceipt {
        /// Its position in the settlement.
        index: usize,
        /// Why.
        reason: &'static str,
    },
    /// A receipt in a settlement was paid before.
    #[error("receipt {index} ({id}) was already settled; a receipt is paid at most once")]
    ReceiptAlreadySettled {
        /// Its position in the settlement.
        index: usize,
        /// Its id.
        id: Hash,
    },
}

/// Why a block is refused. The state is untouched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// Wrong chain id in the header.
    #[error("block is for chain {got:?}, this chain is {want:?}")]
    WrongChain {
        /// Header chain id.
        got: String,
        /// This chain.
        want: String,
    },
    /// Not the next height.
    #[error("block height {got}, expected {want}")]
    WrongHeight {
        /// Given.
        got: u64,
        /// Expected.
        want: u64,
    },
    /// The header's tx root does not match the transactions.
    #[error("tx_root does not match the block's transactions")]
    TxRootMismatch,
    /// The header's state root is not the root the block produces.
    #[error("state_root {header} in the header, but applying the block gives {computed}")]
    StateRootMismatch {
        /// In the header.
        header: Hash,
        /// Computed.
        computed: Hash,
    },
    /// A transaction is invalid.
    #[error("transaction {index} ({hash}): {error}")]
    Tx {
        /// Position in the block.
        index: usize,
        /// Its hash.
        hash: Hash,
        /// Why.
        error: Box<TxError>,
    },
}
