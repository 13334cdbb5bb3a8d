//! Serving receipts: what a miner signs for each answered request, countersigned by the gateway
//! whose escrow pays for it, and settled on the ledger in batches.

use agora_codec::{Decode, Encode, Error, Reader, encode_bytes};

use crate::{Address, Amount, Hash, NetUid};

/// Most receipts in one settlement transaction (keeps it under `MAX_TX_BYTES`).
pub const MAX_RECEIPTS: usize = 128;
/// Longest a receipt may stay unsettled, in blocks from the height it is settled at.
pub const MAX_RECEIPT_TTL: u64 = 100_000;
/// Domain of the bytes a miner and a gateway sign for a receipt.
pub const RECEIPT_SIGNING_DOMAIN: &[u8] = b"agora/receipt/v1";

/// One served request, as the miner and the gateway agree on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The subnet served.
    pub netuid: NetUid,
    /// The miner's hotkey (signs; is paid).
    pub miner: Address,
    /// The gateway's account (countersigns; its escrow pays).
    pub gateway: Address,
    /// BLAKE3 of the request as the miner received it (before sealing).
    pub request_hash: Hash,
    /// BLAKE3 of the full response.
    pub response_hash: Hash,
    /// BLAKE3 of the model file that served it.
    pub model_hash: Hash,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Price per 1,000 tokens (prompt plus completion).
    pub price_per_1k_tokens: Amount,
    /// Chosen by the gateway, unique per receipt.
    pub nonce: u64,
    /// Last height at which it may be settled.
    pub expiry_height: u64,
}

impl Receipt {
    /// What it costs: `ceil((prompt + completion) * price / 1000)`; `None` on overflow.
    pub fn cost(&self) -> Option<Amount> {
        let tokens = u128::from(self.prompt_tokens) + u128::from(self.completion_tokens);
        let product = tokens.checked_mul(self.price_per_1k_tokens.0)?;
        Some(Amount(product.div_ceil(1000)))
    }

    /// The bytes both parties sign: domain, chain id, then the receipt.
    pub fn signing_bytes(&self, chain_id: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        encode_bytes(RECEIPT_SIGNING_DOMAIN, &mut out);
        encode_bytes(chain_id.as_bytes(), &mut out);
        self.encode(&mut out);
        out
    }
}

impl Encode for Receipt {
    fn encode(&self, out: &mut Vec<u8>) {
        self.netuid.encode(out);
        self.miner.encode(out);
        self.gateway.encode(out);
        self.request_hash.encode(out);
        self.response_hash.encode(out);
        self.model_hash.encode(out);
        self.prompt_tokens.encode(out);
        self.completion_tokens.encode(out);
        self.price_per_1k_tokens.encode(out);
        self.nonce.encode(out);
        self.expiry_height.encode(out);
    }
}

impl Decode for Receipt {
    const MIN_BYTES: usize = 2 + 32 * 5 + 4 + 4 + 16 + 8 + 8;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            netuid: Decode::decode(r)?,
            miner: Decode::decode(r)?,
            gateway: Decode::decode(r)?,
            request_hash: Decode::decode(r)?,
            response_hash: Decode::decode(r)?,
            model_hash: Decode::decode(r)?,
            prompt_tokens: Decode::decode(r)?,
            completion_tokens: Decode::decode(r)?,
            price_per_1k_tokens: Decode::decode(r)?,
            nonce: Decode::decode(r)?,
            expiry_height: Decode::decode(r)?,
        })
    }
}

/// A receipt with the miner's signature and the gateway's countersignature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// By `receipt.miner` over [`Receipt::signing_bytes`].
    pub miner_signature: [u8; 64],
    /// By `receipt.gateway` over the same bytes.
    pub gateway_signature: [u8; 64],
}

impl Encode for SignedReceipt {
    fn encode(&self, out: &mut Vec<u8>) {
        self.receipt.encode(out);
        out.extend_from_slice(&self.miner_signature);
        out.extend_from_slice(&self.gateway_signature);
    }
}

impl Decode for SignedReceipt {
    const MIN_BYTES: usize = Receipt::MIN_BYTES + 128;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            receipt: Decode::decode(r)?,
            miner_signature: r.array::<64>("receipt.miner_signature")?,
            gateway_signature: r.array::<64>("receipt.gateway_signature")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_up_and_refuses_overflow() {
        let mut r = Receipt {
            netuid: 1,
            miner: Address([1; 32]),
            gateway: Address([2; 32]),
            request_hash: Hash([3; 32]),
            response_hash: Hash([4; 32]),
            model_hash: Hash([5; 32]),
            prompt_tokens: 10,
            completion_tokens: 1,
            price_per_1k_tokens: Amount(1000),
            nonce: 1,
            expiry_height: 9,
        };
        assert_eq!(r.cost(), Some(Amount(11)));
        r.price_per_1k_tokens = Amount(1);
        assert_eq!(r.cost(), Some(Amount(1)));
        r.price_per_1k_tokens = Amount(u128::MAX);
        assert_eq!(r.cost(), None);
        let signed = SignedReceipt {
            receipt: r,
            miner_signature: [1; 64],
            gateway_signature: [2; 64],
        };
        let bytes = agora_codec::encode_to_vec(&signed);
        assert_eq!(bytes.len(), SignedReceipt::MIN_BYTES);
        assert_eq!(
            agora_codec::decode_exact::<SignedReceipt>(&bytes),
            Ok(signed)
        );
    }
}
