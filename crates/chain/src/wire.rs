//! The chain's wire and WAL encoding of Malachite's messages: Agora's canonical codec (fixed-width
//! little-endian integers, `u32` length prefixes, one-byte tags), every length capped, trailing
//! bytes refused. One codec serves gossip, sync and the write-ahead log.

use agora_codec::{Decode, Encode, Error, Reader, encode_bytes, encode_len};
use bytes::Bytes;
use malachitebft_app_channel::app::consensus::LivenessMsg;
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::codec::{Codec, HasEncodedLen};
use malachitebft_app_channel::app::types::core::{
    CommitCertificate, CommitSignature, ExtendedCommitCertificate, ExtendedCommitSignature,
    NilOrVal, PolkaCertificate, PolkaSignature, Round, RoundCertificate, RoundCertificateType,
    RoundSignature, SignedMessage, ValidatorProof, Validity, VoteType,
};
use malachitebft_app_channel::app::types::sync::{RawDecidedValue, Request, Response, Status};
use malachitebft_app_channel::app::types::{PeerId, ProposedValue, SignedConsensusMsg};
use malachitebft_sync as msync;

use crate::context::{
    AgoraContext, BlockId, Height, NodeAddress, Proposal, ProposalPart, Vote, encode_round,
};

/// Most signatures in one certificate (far above any validator set we run).
pub const MAX_SIGNATURES: usize = 1024;
/// Largest data chunk of a streamed block.
pub const MAX_PART_BYTES: usize = 1 << 20;
/// Largest encoded block carried by sync.
pub const MAX_VALUE_BYTES: usize = 16 << 20;
/// Most decided values in one sync response.
pub const MAX_SYNC_VALUES: usize = 256;
/// Largest stream id.
const MAX_STREAM_ID: usize = 64;
/// Largest libp2p peer id.
const MAX_PEER_ID: usize = 128;

type Ctx = AgoraContext;

/// The codec Malachite uses for every message of an Agora chain.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChainCodec;

fn get_round(r: &mut Reader<'_>) -> Result<Round, Error> {
    match r.tag()? {
        0 => Ok(Round::Nil),
        1 => Ok(Round::new(u32::decode(r)?)),
        tag => Err(Error::InvalidTag { what: "round", tag }),
    }
}

fn put_height(h: Height, out: &mut Vec<u8>) {
    h.0.encode(out);
}

fn get_height(r: &mut Reader<'_>) -> Result<Height, Error> {
    Ok(Height(u64::decode(r)?))
}

fn put_addr(a: &NodeAddress, out: &mut Vec<u8>) {
    a.0.encode(out);
}

fn get_addr(r: &mut Reader<'_>) -> Result<NodeAddress, Error> {
    Ok(NodeAddress(Decode::decode(r)?))
}

fn put_id(id: &BlockId, out: &mut Vec<u8>) {
    id.0.encode(out);
}

fn get_id(r: &mut Reader<'_>) -> Result<BlockId, Error> {
    Ok(BlockId(Decode::decode(r)?))
}

fn put_sig(sig: &[u8; 64], out: &mut Vec<u8>) {
    out.extend_from_slice(sig);
}

fn get_sig(r: &mut Reader<'_>) -> Result<[u8; 64], Error> {
    r.array::<64>("signature")
}

fn put_nil_or_id(v: &NilOrVal<BlockId>, out: &mut Vec<u8>) {
    match v {
        NilOrVal::Nil => out.push(0),
        NilOrVal::Val(id) => {
            out.push(1);
            put_id(id, out);
        }
    }
}

fn get_nil_or_id(r: &mut Reader<'_>) -> Result<NilOrVal<BlockId>, Error> {
    match r.tag()? {
        0 => Ok(NilOrVal::Nil),
        1 => Ok(NilOrVal::Val(get_id(r)?)),
        tag => Err(Error::InvalidTag {
            what: "vote value",
            tag,
        }),
    }
}

fn put_vote_type(t: VoteType, out: &mut Vec<u8>) {
    out.push(match t {
        VoteType::Prevote => 0,
        VoteType::Precommit => 1,
    });
}

fn get_vote_type(r: &mut Reader<'_>) -> Result<VoteType, Error> {
    match r.tag()? {
        0 => Ok(VoteType::Prevote),
        1 => Ok(VoteType::Precommit),
        tag => Err(Error::InvalidTag {
            what: "vote type",
            tag,
        }),
    }
}

fn put_extension(ext: &Option<SignedMessage<Ctx, ()>>, out: &mut Vec<u8>) {
    match ext {
        None => out.push(0),
        Some(signed) => {
            out.push(1);
            put_sig(&signed.signature, out);
        }
    }
}

fn get_extension(r: &mut Reader<'_>) -> Result<Option<SignedMessage<Ctx, ()>>, Error> {
    match r.tag()? {
        0 => Ok(None),
        1 => Ok(Some(SignedMessage::new((), get_sig(r)?))),
        tag => Err(Error::InvalidTag {
            what: "vote extension",
            tag,
        }),
    }
}

fn put_vote(v: &Vote, out: &mut Vec<u8>) {
    put_vote_type(v.vote_type, out);
    put_height(v.height, out);
    encode_round(v.round, out);
    put_nil_or_id(&v.value, out);
    put_addr(&v.validator, out);
    put_extension(&v.extension, out);
}

fn get_vote(r: &mut Reader<'_>) -> Result<Vote, Error> {
    Ok(Vote {
        vote_type: get_vote_type(r)?,
        height: get_height(r)?,
        round: get_round(r)?,
        value: get_nil_or_id(r)?,
        validator: get_addr(r)?,
        extension: get_extension(r)?,
    })
}

fn put_proposal(p: &Proposal, out: &mut Vec<u8>) {
    put_height(p.height, out);
    encode_round(p.round, out);
    put_id(&p.value, out);
    encode_round(p.pol_round, out);
    put_addr(&p.proposer, out);
}

fn get_proposal(r: &mut Reader<'_>) -> Result<Proposal, Error> {
    Ok(Proposal {
        height: get_height(r)?,
        round: get_round(r)?,
        value: get_id(r)?,
        pol_round: get_round(r)?,
        proposer: get_addr(r)?,
    })
}

fn put_part(p: &ProposalPart, out: &mut Vec<u8>) {
    match p {
        ProposalPart::Init {
            height,
            round,
            pol_round,
            proposer,
        } => {
            out.push(0);
            put_height(*height, out);
            encode_round(*round, out);
            encode_round(*pol_round, out);
            put_addr(proposer, out);
        }
        ProposalPart::Data(bytes) => {
            out.push(1);
            encode_bytes(bytes, out);
        }
        ProposalPart::Fin { signature } => {
            out.push(2);
            put_sig(signature, out);
        }
    }
}

fn get_part(r: &mut Reader<'_>) -> Result<ProposalPart, Error> {
    match r.tag()? {
        0 => Ok(ProposalPart::Init {
            height: get_height(r)?,
            round: get_round(r)?,
            pol_round: get_round(r)?,
            proposer: get_addr(r)?,
        }),
        1 => Ok(ProposalPart::Data(
            r.bytes(MAX_PART_BYTES, "proposal data")?,
        )),
        2 => Ok(ProposalPart::Fin {
            signature: get_sig(r)?,
        }),
        tag => Err(Error::InvalidTag {
            what: "proposal part",
            tag,
        }),
    }
}

fn put_signed_vote(v: &SignedMessage<Ctx, Vote>, out: &mut Vec<u8>) {
    put_vote(&v.message, out);
    put_sig(&v.signature, out);
}

fn get_signed_vote(r: &mut Reader<'_>) -> Result<SignedMessage<Ctx, Vote>, Error> {
    let vote = get_vote(r)?;
    Ok(SignedMessage::new(vote, get_sig(r)?))
}

fn put_count(n: usize, out: &mut Vec<u8>) {
    encode_len(n, out);
}

fn get_count(
    r: &mut Reader<'_>,
    max: usize,
    min_item: usize,
    what: &'static str,
) -> Result<usize, Error> {
    r.len(max, min_item, what)
}

fn put_polka(c: &PolkaCertificate<Ctx>, out: &mut Vec<u8>) {
    put_height(c.height, out);
    encode_round(c.round, out);
    put_id(&c.value_id, out);
    put_count(c.polka_signatures.len(), out);
    for s in &c.polka_signatures {
        put_addr(&s.address, out);
        put_sig(&s.signature, out);
    }
}

fn get_polka(r: &mut Reader<'_>) -> Result<PolkaCertificate<Ctx>, Error> {
    let height = get_height(r)?;
    let round = get_round(r)?;
    let value_id = get_id(r)?;
    let n = get_count(r, MAX_SIGNATURES, 96, "polka signatures")?;
    let mut polka_signatures = Vec::with_capacity(n);
    for _ in 0..n {
        let address = get_addr(r)?;
        polka_signatures.push(PolkaSignature::new(address, get_sig(r)?));
    }
    Ok(PolkaCertificate {
        height,
        round,
        value_id,
        polka_signatures,
    })
}

fn put_round_cert(c: &RoundCertificate<Ctx>, out: &mut Vec<u8>) {
    put_height(c.height, out);
    encode_round(c.round, out);
    out.push(match c.cert_type {
        RoundCertificateType::Skip => 0,
        RoundCertificateType::Precommit => 1,
    });
    put_count(c.round_signatures.len(), out);
    for s in &c.round_signatures {
        put_vote_type(s.vote_type, out);
        put_nil_or_id(&s.value_id, out);
        put_addr(&s.address, out);
        put_sig(&s.signature, out);
    }
}

fn get_round_cert(r: &mut Reader<'_>) -> Result<RoundCertificate<Ctx>, Error> {
    let height = get_height(r)?;
    let round = get_round(r)?;
    let cert_type = match r.tag()? {
        0 => RoundCertificateType::Skip,
        1 => RoundCertificateType::Precommit,
        tag => {
            return Err(Error::InvalidTag {
                what: "round certificate type",
                tag,
            });
        }
    };
    let n = get_count(r, MAX_SIGNATURES, 98, "round signatures")?;
    let mut round_signatures = Vec::with_capacity(n);
    for _ in 0..n {
        let vote_type = get_vote_type(r)?;
        let value_id = get_nil_or_id(r)?;
        let address = get_addr(r)?;
        let signature = get_sig(r)?;
        round_signatures.push(RoundSignature::new(vote_type, value_id, address, signature));
    }
    Ok(RoundCertificate {
        height,
        round,
        cert_type,
        round_signatures,
    })
}

fn put_extended_cert(c: &ExtendedCommitCertificate<Ctx>, out: &mut Vec<u8>) {
    put_height(c.height, out);
    encode_round(c.round, out);
    put_id(&c.value_id, out);
    put_count(c.commit_signatures.len(), out);
    for s in &c.commit_signatures {
        put_addr(&s.address, out);
        put_sig(&s.signature, out);
        put_extension(&s.extension, out);
    }
}

fn get_extended_cert(r: &mut Reader<'_>) -> Result<ExtendedCommitCertificate<Ctx>, Error> {
    let height = get_height(r)?;
    let round = get_round(r)?;
    let value_id = get_id(r)?;
    let n = get_count(r, MAX_SIGNATURES, 97, "commit signatures")?;
    let mut commit_signatures = Vec::with_capacity(n);
    for _ in 0..n {
        let address = get_addr(r)?;
        let signature = get_sig(r)?;
        let extension = get_extension(r)?;
        commit_signatures.push(ExtendedCommitSignature::new(address, signature, extension));
    }
    Ok(ExtendedCommitCertificate {
        height,
        round,
        value_id,
        commit_signatures,
    })
}

/// Encode a commit certificate (what the store keeps beside each block).
pub fn encode_commit_certificate(c: &CommitCertificate<Ctx>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + c.commit_signatures.len() * 96);
    put_height(c.height, &mut out);
    encode_round(c.round, &mut out);
    put_id(&c.value_id, &mut out);
    put_count(c.commit_signatures.len(), &mut out);
    for s in &c.commit_signatures {
        put_addr(&s.address, &mut out);
        put_sig(&s.signature, &mut out);
    }
    out
}

/// Decode a stored commit certificate.
pub fn decode_commit_certificate(bytes: &[u8]) -> Result<CommitCertificate<Ctx>, Error> {
    exact(bytes, |r| {
        let height = get_height(r)?;
        let round = get_round(r)?;
        let value_id = get_id(r)?;
        let n = get_count(r, MAX_SIGNATURES, 96, "commit signatures")?;
        let mut commit_signatures = Vec::with_capacity(n);
        for _ in 0..n {
            let address = get_addr(r)?;
            commit_signatures.push(CommitSignature::new(address, get_sig(r)?));
        }
        Ok(CommitCertificate {
            height,
            round,
            value_id,
            commit_signatures,
        })
    })
}

/// A commit certificate as sync carries it (no extensions: Agora does not use them).
pub fn extend_certificate(c: CommitCertificate<Ctx>) -> ExtendedCommitCertificate<Ctx> {
    ExtendedCommitCertificate {
        height: c.height,
        round: c.round,
        value_id: c.value_id,
        commit_signatures: c
            .commit_signatures
            .into_iter()
            .map(|s| ExtendedCommitSignature::new(s.address, s.signature, None))
            .collect(),
    }
}

fn put_peer(p: &PeerId, out: &mut Vec<u8>) {
    encode_bytes(&p.to_bytes(), out);
}

fn get_peer(r: &mut Reader<'_>) -> Result<PeerId, Error> {
    let bytes = r.bytes(MAX_PEER_ID, "peer id")?;
    PeerId::from_bytes(&bytes).map_err(|_| Error::Invalid {
        what: "peer id",
        reason: "not a libp2p peer id",
    })
}

fn put_validity(v: Validity, out: &mut Vec<u8>) {
    out.push(u8::from(v.is_valid()));
}

fn get_validity(r: &mut Reader<'_>) -> Result<Validity, Error> {
    match r.tag()? {
        0 => Ok(Validity::Invalid),
        1 => Ok(Validity::Valid),
        tag => Err(Error::InvalidTag {
            what: "validity",
            tag,
        }),
    }
}

fn exact<T>(bytes: &[u8], f: impl FnOnce(&mut Reader<'_>) -> Result<T, Error>) -> Result<T, Error> {
    let mut r = Reader::new(bytes);
    let value = f(&mut r)?;
    match r.remaining() {
        0 => Ok(value),
        count => Err(Error::TrailingBytes { count }),
    }
}

macro_rules! wire {
    ($t:ty, |$v:ident, $out:ident| $enc:block, |$r:ident| $dec:block) => {
        impl Codec<$t> for ChainCodec {
            type Error = Error;

            fn decode(&self, bytes: Bytes) -> Result<$t, Error> {
                exact(&bytes, |$r| $dec)
            }

            fn encode(&self, $v: &$t) -> Result<Bytes, Error> {
                let mut $out = Vec::with_capacity(256);
                $enc
                Ok(Bytes::from($out))
            }
        }
    };
}

wire!(ProposalPart, |v, out| { put_part(v, &mut out) }, |r| {
    get_part(r)
});

wire!(
    SignedConsensusMsg<Ctx>,
    |v, out| {
        match v {
            SignedConsensusMsg::Vote(vote) => {
                out.push(0);
                put_signed_vote(vote, &mut out);
            }
            SignedConsensusMsg::Proposal(p) => {
                out.push(1);
                put_proposal(&p.message, &mut out);
                put_sig(&p.signature, &mut out);
            }
        }
    },
    |r| {
        match r.tag()? {
            0 => Ok(SignedConsensusMsg::Vote(get_signed_vote(r)?)),
            1 => {
                let p = get_proposal(r)?;
                Ok(SignedConsensusMsg::Proposal(SignedMessage::new(
                    p,
                    get_sig(r)?,
                )))
            }
            tag => Err(Error::InvalidTag {
                what: "consensus message",
                tag,
            }),
        }
    }
);

wire!(
    LivenessMsg<Ctx>,
    |v, out| {
        match v {
            LivenessMsg::Vote(vote) => {
                out.push(0);
                put_signed_vote(vote, &mut out);
            }
            LivenessMsg::PolkaCertificate(c) => {
                out.push(1);
                put_polka(c, &mut out);
            }
            LivenessMsg::SkipRoundCertificate(c) => {
                out.push(2);
                put_round_cert(c, &mut out);
            }
        }
    },
    |r| {
        match r.tag()? {
            0 => Ok(LivenessMsg::Vote(get_signed_vote(r)?)),
            1 => Ok(LivenessMsg::PolkaCertificate(get_polka(r)?)),
            2 => Ok(LivenessMsg::SkipRoundCertificate(get_round_cert(r)?)),
            tag => Err(Error::InvalidTag {
                what: "liveness message",
                tag,
            }),
        }
    }
);

wire!(
    StreamMessage<ProposalPart>,
    |v, out| {
        encode_bytes(&v.stream_id.to_bytes(), &mut out);
        v.sequence.encode(&mut out);
        match &v.content {
            StreamContent::Data(part) => {
                out.push(0);
                put_part(part, &mut out);
            }
            StreamContent::Fin => out.push(1),
        }
    },
    |r| {
        let stream_id = StreamId::new(Bytes::from(r.bytes(MAX_STREAM_ID, "stream id")?));
        let sequence = u64::decode(r)?;
        let content = match r.tag()? {
            0 => StreamContent::Data(get_part(r)?),
            1 => StreamContent::Fin,
            tag => {
                return Err(Error::InvalidTag {
                    what: "stream content",
                    tag,
                });
            }
        };
        Ok(StreamMessage::new(stream_id, sequence, content))
    }
);

wire!(
    ValidatorProof<Ctx>,
    |v, out| {
        encode_bytes(&v.public_key, &mut out);
        encode_bytes(&v.peer_id, &mut out);
        put_sig(&v.signature, &mut out);
    },
    |r| {
        let public_key = r.bytes(32, "proof public key")?;
        let peer_id = r.bytes(MAX_PEER_ID, "proof peer id")?;
        Ok(ValidatorProof::new(public_key, peer_id, get_sig(r)?))
    }
);

wire!(
    Status<Ctx>,
    |v, out| {
        put_peer(&v.peer_id, &mut out);
        put_height(v.tip_height, &mut out);
        put_height(v.history_min_height, &mut out);
    },
    |r| {
        Ok(Status {
            peer_id: get_peer(r)?,
            tip_height: get_height(r)?,
            history_min_height: get_height(r)?,
        })
    }
);

wire!(
    Request<Ctx>,
    |v, out| {
        match v {
            Request::ValueRequest(req) => {
                out.push(0);
                put_height(*req.range.start(), &mut out);
                put_height(*req.range.end(), &mut out);
            }
        }
    },
    |r| {
        match r.tag()? {
            0 => {
                let start = get_height(r)?;
                let end = get_height(r)?;
                Ok(Request::ValueRequest(msync::ValueRequest::new(start..=end)))
            }
            tag => Err(Error::InvalidTag {
                what: "sync request",
                tag,
            }),
        }
    }
);

fn put_response(v: &Response<Ctx>, out: &mut Vec<u8>) {
    match v {
        Response::ValueResponse(resp) => {
            out.push(0);
            put_height(resp.start_height, out);
            put_count(resp.values.len(), out);
            for value in &resp.values {
                encode_bytes(&value.value_bytes, out);
                put_extended_cert(&value.certificate, out);
            }
        }
    }
}

wire!(Response<Ctx>, |v, out| { put_response(v, &mut out) }, |r| {
    match r.tag()? {
        0 => {
            let start_height = get_height(r)?;
            let n = get_count(r, MAX_SYNC_VALUES, 50, "sync values")?;
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                let value_bytes = Bytes::from(r.bytes(MAX_VALUE_BYTES, "synced block")?);
                let certificate = get_extended_cert(r)?;
                values.push(RawDecidedValue::new(value_bytes, certificate));
            }
            Ok(Response::ValueResponse(msync::ValueResponse::new(
                start_height,
                values,
            )))
        }
        tag => Err(Error::InvalidTag {
            what: "sync response",
            tag,
        }),
    }
});

impl HasEncodedLen<Response<Ctx>> for ChainCodec {
    fn encoded_len(&self, msg: &Response<Ctx>) -> Result<usize, Error> {
        let mut out = Vec::new();
        put_response(msg, &mut out);
        Ok(out.len())
    }
}

wire!(
    ProposedValue<Ctx>,
    |v, out| {
        put_height(v.height, &mut out);
        encode_round(v.round, &mut out);
        encode_round(v.valid_round, &mut out);
        put_addr(&v.proposer, &mut out);
        put_id(&v.value, &mut out);
        put_validity(v.validity, &mut out);
    },
    |r| {
        Ok(ProposedValue {
            height: get_height(r)?,
            round: get_round(r)?,
            valid_round: get_round(r)?,
            proposer: get_addr(r)?,
            value: get_id(r)?,
            validity: get_validity(r)?,
        })
    }
);

wire!(
    PolkaCertificate<Ctx>,
    |v, out| { put_polka(v, &mut out) },
    |r| { get_polka(r) }
);

/// Encode a proposed value (the pending-proposal records in the store use it too).
pub fn encode_proposed_value(v: &ProposedValue<Ctx>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    put_height(v.height, &mut out);
    encode_round(v.round, &mut out);
    encode_round(v.valid_round, &mut out);
    put_addr(&v.proposer, &mut out);
    put_id(&v.value, &mut out);
    put_validity(v.validity, &mut out);
    out
}

/// Decode what [`encode_proposed_value`] wrote.
pub fn decode_proposed_value(bytes: &[u8]) -> Result<ProposedValue<Ctx>, Error> {
    ChainCodec.decode(Bytes::copy_from_slice(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_primitives::{Address, Hash};

    fn addr(b: u8) -> NodeAddress {
        NodeAddress(Address([b; 32]))
    }

    fn roundtrip<T>(v: T)
    where
        ChainCodec: Codec<T>,
        T: PartialEq + std::fmt::Debug,
    {
        let bytes = ChainCodec.encode(&v).unwrap();
        let back: T = ChainCodec.decode(bytes.clone()).unwrap();
        assert_eq!(back, v);
        // Every strict prefix fails to decode, and so does one extra byte.
        for cut in 0..bytes.len() {
            assert!(<ChainCodec as Codec<T>>::decode(&ChainCodec, bytes.slice(..cut)).is_err());
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(<ChainCodec as Codec<T>>::decode(&ChainCodec, Bytes::from(longer)).is_err());
    }

    fn vote(t: VoteType, value: NilOrVal<BlockId>) -> SignedMessage<Ctx, Vote> {
        SignedMessage::new(
            Vote {
                vote_type: t,
                height: Height(7),
                round: Round::new(2),
                value,
                validator: addr(3),
                extension: None,
            },
            [9u8; 64],
        )
    }

    #[test]
    fn messages_roundtrip_and_refuse_truncation() {
        let id = BlockId(Hash([5; 32]));
        roundtrip(SignedConsensusMsg::Vote(vote(
            VoteType::Prevote,
            NilOrVal::Nil,
        )));
        roundtrip(SignedConsensusMsg::Vote(vote(
            VoteType::Precommit,
            NilOrVal::Val(id),
        )));
        roundtrip(SignedConsensusMsg::<Ctx>::Proposal(SignedMessage::new(
            Proposal {
                height: Height(1),
                round: Round::ZERO,
                value: id,
                pol_round: Round::Nil,
                proposer: addr(1),
            },
            [1u8; 64],
        )));
        roundtrip(ProposalPart::Data(vec![1, 2, 3]));
        roundtrip(StreamMessage::new(
            StreamId::new(Bytes::from_static(b"abc")),
            4,
            StreamContent::Data(ProposalPart::Init {
                height: Height(3),
                round: Round::new(1),
                pol_round: Round::Nil,
                proposer: addr(2),
            }),
        ));
        roundtrip(StreamMessage::<ProposalPart>::new(
            StreamId::new(Bytes::from_static(b"abc")),
            5,
            StreamContent::Fin,
        ));
        roundtrip(PolkaCertificate::<Ctx> {
            height: Height(4),
            round: Round::ZERO,
            value_id: id,
            polka_signatures: vec![PolkaSignature::new(addr(1), [2; 64])],
        });
        roundtrip(LivenessMsg::<Ctx>::SkipRoundCertificate(RoundCertificate {
            height: Height(4),
            round: Round::new(3),
            cert_type: RoundCertificateType::Skip,
            round_signatures: vec![RoundSignature::new(
                VoteType::Prevote,
                NilOrVal::Val(id),
                addr(4),
                [3; 64],
            )],
        }));
        roundtrip(ProposedValue::<Ctx> {
            height: Height(9),
            round: Round::ZERO,
            valid_round: Round::Nil,
            proposer: addr(1),
            value: id,
            validity: Validity::Valid,
        });
        let cert = CommitCertificate::<Ctx> {
            height: Height(2),
            round: Round::ZERO,
            value_id: id,
            commit_signatures: vec![CommitSignature::new(addr(1), [4; 64])],
        };
        let bytes = encode_commit_certificate(&cert);
        assert_eq!(decode_commit_certificate(&bytes).unwrap(), cert);
        roundtrip(Response::<Ctx>::ValueResponse(msync::ValueResponse::new(
            Height(2),
            vec![RawDecidedValue::new(
                Bytes::from_static(b"block"),
                extend_certificate(cert),
            )],
        )));
    }

    #[test]
    fn bad_tags_and_huge_lengths_are_typed_errors() {
        let err =
            <ChainCodec as Codec<ProposalPart>>::decode(&ChainCodec, Bytes::from_static(&[9]))
                .unwrap_err();
        assert!(matches!(err, Error::InvalidTag { .. }), "{err}");
        // A data part claiming 4 GiB in a 5-byte message.
        let err = <ChainCodec as Codec<ProposalPart>>::decode(
            &ChainCodec,
            Bytes::from_static(&[1, 0xff, 0xff, 0xff, 0xff]),
        )
        .unwrap_err();
        assert!(matches!(err, Error::TooLong { .. }), "{err}");
    }
}
