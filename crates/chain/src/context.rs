//! Agora's consensus context for Malachite: the concrete types Tendermint runs over.
//!
//! - The decided value is a [`BlockId`] (the block's hash). The block itself travels as proposal
//!   parts (`Init`, `Data` chunks, `Fin` signed by the proposer) and through value sync.
//! - Validators are the ledger's chain validators (`State::chain_validators`), their voting power
//!   the stake in whole AGORA. An address is the validator hotkey, which is also its Ed25519
//!   public key.
//! - Every signed message is domain-separated and bound to the chain id.

use std::fmt;
use std::sync::Arc;

use agora_codec::Encode;
use agora_crypto::Keypair;
use agora_primitives::{Address, Amount, Hash};
use async_trait::async_trait;
use malachitebft_app_channel::app::types::core::{
    self as mc, LinearTimeouts, NilOrVal, Round, SignedExtension, SignedMessage, ValidatorProof,
    VoteExtensionScope, VoteType, VotingPower,
};
use malachitebft_app_channel::{Signer, Verifier};
use malachitebft_signing::{Error as SigningError, VerificationResult};

/// A block height (genesis state is height 0, the first block height 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mc::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's address: its hotkey (an Ed25519 public key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddress(pub Address);

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mc::Address for NodeAddress {}

/// The value consensus decides: a block, named by its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId(pub Hash);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mc::Value for BlockId {
    type Id = BlockId;

    fn id(&self) -> BlockId {
        *self
    }
}

/// Ed25519 over the chain's canonical signing bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519Scheme;

/// A byte string that is not a valid key or signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemeError(pub &'static str);

impl fmt::Display for SchemeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A validator's secret seed (only used through [`ChainSigner`]).
#[derive(Clone)]
pub struct SecretSeed(pub [u8; 32]);

impl fmt::Debug for SecretSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretSeed(..)")
    }
}

impl mc::SigningScheme for Ed25519Scheme {
    type DecodingError = SchemeError;
    type Signature = [u8; 64];
    type PublicKey = Address;
    type PrivateKey = SecretSeed;

    fn decode_signature(bytes: &[u8]) -> Result<[u8; 64], SchemeError> {
        bytes
            .try_into()
            .map_err(|_| SchemeError("an Ed25519 signature is 64 bytes"))
    }

    fn encode_signature(signature: &[u8; 64]) -> Vec<u8> {
        signature.to_vec()
    }

    fn decode_public_key(bytes: &[u8]) -> Result<Address, SchemeError> {
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SchemeError("an Ed25519 public key is 32 bytes"))?;
        Ok(Address(raw))
    }

    fn encode_public_key(public_key: &Address) -> Vec<u8> {
        public_key.0.to_vec()
    }
}

/// A chain validator with its voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// Address (hotkey).
    pub address: NodeAddress,
    /// Voting power: stake in whole AGORA.
    pub power: VotingPower,
}

impl mc::Validator<AgoraContext> for Validator {
    fn address(&self) -> &NodeAddress {
        &self.address
    }

    fn public_key(&self) -> &Address {
        &self.address.0
    }

    fn voting_power(&self) -> VotingPower {
        self.power
    }
}

/// The validators of one height, sorted by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    /// Sorted by address, no duplicates, every power above zero.
    pub validators: Arc<Vec<Validator>>,
}

impl ValidatorSet {
    /// The set from the ledger's `(hotkey, stake)` list: power is the stake in whole AGORA
    /// (capped at `u64::MAX`); hotkeys with under one AGORA get no vote.
    pub fn from_stakes(stakes: &[(Address, Amount)]) -> Self {
        let mut validators: Vec<Validator> = stakes
            .iter()
            .filter_map(|(address, stake)| {
                let whole = stake.0 / agora_primitives::BASE_UNITS_PER_AGORA;
                let power = u64::try_from(whole).unwrap_or(u64::MAX);
                (power > 0).then_some(Validator {
                    address: NodeAddress(*address),
                    power,
                })
            })
            .collect();
        validators.sort_by_key(|v| v.address);
        validators.dedup_by(|a, b| a.address == b.address);
        Self {
            validators: Arc::new(validators),
        }
    }

    /// Whether `address` votes in this set.
    pub fn contains(&self, address: &Address) -> bool {
        self.validators
            .binary_search_by(|v| v.address.0.cmp(address))
            .is_ok()
    }
}

impl mc::ValidatorSet<AgoraContext> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> VotingPower {
        self.validators
            .iter()
            .fold(0u64, |acc, v| acc.saturating_add(v.power))
    }

    fn get_by_address(&self, address: &NodeAddress) -> Option<&Validator> {
        self.validators
            .binary_search_by(|v| v.address.cmp(address))
            .ok()
            .and_then(|i| self.validators.get(i))
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// A proposal: the block id proposed at a height and round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// The proposed block.
    pub value: BlockId,
    /// Proof-of-lock round (`Round::Nil` for a fresh value).
    pub pol_round: Round,
    /// The proposer.
    pub proposer: NodeAddress,
}

impl mc::Proposal<AgoraContext> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &BlockId {
        &self.value
    }
    fn take_value(self) -> BlockId {
        self.value
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &NodeAddress {
        &self.proposer
    }
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    /// Prevote or precommit.
    pub vote_type: VoteType,
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// The block voted for, or nil.
    pub value: NilOrVal<BlockId>,
    /// The voter.
    pub validator: NodeAddress,
    /// Vote extension (unused by Agora: always `None`).
    pub extension: Option<SignedExtension<AgoraContext>>,
}

impl mc::Vote<AgoraContext> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<BlockId> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<BlockId> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.vote_type
    }
    fn validator_address(&self) -> &NodeAddress {
        &self.validator
    }
    fn extension(&self) -> Option<&SignedExtension<AgoraContext>> {
        self.extension.as_ref()
    }
    fn take_extension(&mut self) -> Option<SignedExtension<AgoraContext>> {
        self.extension.take()
    }
    fn extend(self, extension: SignedExtension<AgoraContext>) -> Self {
        Self {
            extension: Some(extension),
            ..self
        }
    }
}

/// One piece of a streamed proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalPart {
    /// Opens the stream: who proposes what, where.
    Init {
        /// Height.
        height: Height,
        /// Round.
        round: Round,
        /// Proof-of-lock round.
        pol_round: Round,
        /// The proposer.
        proposer: NodeAddress,
    },
    /// A chunk of the encoded block.
    Data(Vec<u8>),
    /// Closes the stream: the proposer's signature over height, round and block hash.
    Fin {
        /// Signature by the proposer over [`fin_signing_bytes`].
        signature: [u8; 64],
    },
}

impl mc::ProposalPart<AgoraContext> for ProposalPart {
    fn is_first(&self) -> bool {
        matches!(self, Self::Init { .. })
    }
    fn is_last(&self) -> bool {
        matches!(self, Self::Fin { .. })
    }
}

/// Consensus timeouts used by every node (see `docs/ARCHITECTURE.md`, "Chain").
pub fn timeouts() -> LinearTimeouts {
    use std::time::Duration;
    LinearTimeouts {
        propose: Duration::from_millis(3000),
        propose_delta: Duration::from_millis(500),
        prevote: Duration::from_millis(1000),
        prevote_delta: Duration::from_millis(500),
        precommit: Duration::from_millis(1000),
        precommit_delta: Duration::from_millis(500),
        rebroadcast: Duration::from_millis(5000),
        max_timeout: Duration::from_secs(30),
    }
}

/// The Malachite context for one chain.
#[derive(Clone, Debug)]
pub struct AgoraContext {
    /// The chain id every signature is bound to.
    pub chain_id: Arc<str>,
}

impl AgoraContext {
    /// The context of chain `chain_id`.
    pub fn new(chain_id: &str) -> Self {
        Self {
            chain_id: Arc::from(chain_id),
        }
    }
}

impl mc::Context for AgoraContext {
    type Address = NodeAddress;
    type Height = Height;
    type ProposalPart = ProposalPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = LinearTimeouts;
    type Value = BlockId;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Ed25519Scheme;

    /// Round robin over the address-sorted set, offset by height, so every validator proposes
    /// in turn and a silent one costs one round.
    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        let count = validator_set.validators.len().max(1) as u64;
        let round = u64::from(round.as_u32().unwrap_or(0));
        let index = height.0.wrapping_add(round) % count;
        let index = usize::try_from(index).unwrap_or(0);
        // Malachite never asks for a proposer of an empty set; fall back to the first entry.
        match validator_set.validators.get(index) {
            Some(v) => v,
            None => &validator_set.validators[0],
        }
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockId,
        pol_round: Round,
        address: NodeAddress,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: NodeAddress,
    ) -> Vote {
        Vote {
            vote_type: VoteType::Prevote,
            height,
            round,
            value: value_id,
            validator: address,
            extension: None,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: NodeAddress,
    ) -> Vote {
        Vote {
            vote_type: VoteType::Precommit,
            height,
            round,
            value: value_id,
            validator: address,
            extension: None,
        }
    }
}

/// A round on the wire: tag 0 for nil, tag 1 and the `u32` otherwise.
pub fn encode_round(round: Round, out: &mut Vec<u8>) {
    match round.as_u32() {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            r.encode(out);
        }
    }
}

fn signing_prefix(domain: &[u8], chain_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    agora_codec::encode_bytes(domain, &mut out);
    agora_codec::encode_bytes(chain_id.as_bytes(), &mut out);
    out
}

/// The bytes a validator signs for a vote (the extension is not covered).
pub fn vote_signing_bytes(chain_id: &str, vote: &Vote) -> Vec<u8> {
    let mut out = signing_prefix(b"agora/vote/v1", chain_id);
    out.push(match vote.vote_type {
        VoteType::Prevote => 0,
        VoteType::Precommit => 1,
    });
    vote.height.0.encode(&mut out);
    encode_round(vote.round, &mut out);
    match &vote.value {
        NilOrVal::Nil => out.push(0),
        NilOrVal::Val(id) => {
            out.push(1);
            id.0.encode(&mut out);
        }
    }
    vote.validator.0.encode(&mut out);
    out
}

/// The bytes a proposer signs for a proposal.
pub fn proposal_signing_bytes(chain_id: &str, proposal: &Proposal) -> Vec<u8> {
    let mut out = signing_prefix(b"agora/proposal/v1", chain_id);
    proposal.height.0.encode(&mut out);
    encode_round(proposal.round, &mut out);
    proposal.value.0.encode(&mut out);
    encode_round(proposal.pol_round, &mut out);
    proposal.proposer.0.encode(&mut out);
    out
}

/// The bytes a proposer signs in the `Fin` part of a streamed block.
pub fn fin_signing_bytes(chain_id: &str, height: Height, round: Round, block: &BlockId) -> Vec<u8> {
    let mut out = signing_prefix(b"agora/proposal-parts/v1", chain_id);
    height.0.encode(&mut out);
    encode_round(round, &mut out);
    block.0.encode(&mut out);
    out
}

fn extension_signing_bytes(chain_id: &str, scope: &VoteExtensionScope<AgoraContext>) -> Vec<u8> {
    let mut out = signing_prefix(b"agora/vote-extension/v1", chain_id);
    scope.height.0.encode(&mut out);
    encode_round(scope.round, &mut out);
    scope.value_id.0.encode(&mut out);
    scope.validator_address.0.encode(&mut out);
    out
}

fn check(address: &Address, message: &[u8], signature: &[u8; 64]) -> VerificationResult {
    VerificationResult::from_bool(agora_crypto::verify(address, message, signature).is_ok())
}

/// Verifies consensus signatures for one chain.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    chain_id: Arc<str>,
}

impl ChainVerifier {
    /// A verifier for `chain_id`.
    pub fn new(chain_id: &str) -> Self {
        Self {
            chain_id: Arc::from(chain_id),
        }
    }
}

#[async_trait]
impl Verifier<AgoraContext> for ChainVerifier {
    async fn verify_signed_vote(
        &self,
        vote: &Vote,
        signature: &[u8; 64],
        public_key: &Address,
    ) -> Result<VerificationResult, SigningError> {
        Ok(check(
            public_key,
            &vote_signing_bytes(&self.chain_id, vote),
            signature,
        ))
    }

    async fn verify_signed_proposal(
        &self,
        proposal: &Proposal,
        signature: &[u8; 64],
        public_key: &Address,
    ) -> Result<VerificationResult, SigningError> {
        Ok(check(
            public_key,
            &proposal_signing_bytes(&self.chain_id, proposal),
            signature,
        ))
    }

    async fn verify_signed_vote_extension(
        &self,
        scope: &VoteExtensionScope<AgoraContext>,
        _extension: &(),
        signature: &[u8; 64],
        public_key: &Address,
    ) -> Result<VerificationResult, SigningError> {
        Ok(check(
            public_key,
            &extension_signing_bytes(&self.chain_id, scope),
            signature,
        ))
    }

    async fn verify_validator_proof(
        &self,
        proof: &ValidatorProof<AgoraContext>,
    ) -> Result<VerificationResult, SigningError> {
        let Ok(raw) = <[u8; 32]>::try_from(proof.public_key.as_slice()) else {
            return Ok(VerificationResult::Invalid);
        };
        Ok(check(&Address(raw), &proof.preimage(), &proof.signature))
    }
}

/// Signs consensus messages with a validator key.
#[derive(Clone, Debug)]
pub struct ChainSigner {
    key: Arc<Keypair>,
    chain_id: Arc<str>,
}

impl ChainSigner {
    /// A signer for `chain_id` with `key`.
    pub fn new(chain_id: &str, key: Arc<Keypair>) -> Self {
        Self {
            key,
            chain_id: Arc::from(chain_id),
        }
    }

    /// The validator address.
    pub fn address(&self) -> NodeAddress {
        NodeAddress(self.key.address())
    }

    /// Sign the `Fin` part of a block stream.
    pub fn sign_fin(&self, height: Height, round: Round, block: &BlockId) -> [u8; 64] {
        self.key
            .sign(&fin_signing_bytes(&self.chain_id, height, round, block))
    }
}

#[async_trait]
impl Signer<AgoraContext> for ChainSigner {
    async fn sign_vote(
        &self,
        vote: Vote,
    ) -> Result<SignedMessage<AgoraContext, Vote>, SigningError> {
        let signature = self.key.sign(&vote_signing_bytes(&self.chain_id, &vote));
        Ok(SignedMessage::new(vote, signature))
    }

    async fn sign_proposal(
        &self,
        proposal: Proposal,
    ) -> Result<SignedMessage<AgoraContext, Proposal>, SigningError> {
        let signature = self
            .key
            .sign(&proposal_signing_bytes(&self.chain_id, &proposal));
        Ok(SignedMessage::new(proposal, signature))
    }

    async fn sign_vote_extension(
        &self,
        scope: VoteExtensionScope<AgoraContext>,
        extension: (),
    ) -> Result<SignedMessage<AgoraContext, ()>, SigningError> {
        let signature = self
            .key
            .sign(&extension_signing_bytes(&self.chain_id, &scope));
        Ok(SignedMessage::new(extension, signature))
    }

    async fn sign_validator_proof(
        &self,
        public_key: Vec<u8>,
        peer_id: Vec<u8>,
    ) -> Result<ValidatorProof<AgoraContext>, SigningError> {
        let preimage = ValidatorProof::<AgoraContext>::signing_bytes(&public_key, &peer_id);
        let signature = self.key.sign(&preimage);
        Ok(ValidatorProof::new(public_key, peer_id, signature))
    }
}
