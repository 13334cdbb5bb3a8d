//! Blocks: a header committing to the transactions and the resulting state, and the
//! transactions themselves.

use agora_codec::{Decode, Encode, Error, Reader, encode_bytes, encode_slice};

use crate::tx::MAX_CHAIN_ID_BYTES;
use crate::{Address, Hash, SignedTransaction};

/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 10_000;

/// A block header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The chain.
    pub chain_id: String,
    /// Height (genesis state is height 0; the first block is height 1).
    pub height: u64,
    /// Hash of the previous header (zero for the first block).
    pub parent: Hash,
    /// The validator that proposed the block; it receives the fees not burned.
    pub proposer: Address,
    /// BLAKE3 over the block's encoded transactions.
    pub tx_root: Hash,
    /// State root after applying the block.
    pub state_root: Hash,
}

impl Encode for Header {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_bytes(self.chain_id.as_bytes(), out);
        self.height.encode(out);
        self.parent.encode(out);
        self.proposer.encode(out);
        self.tx_root.encode(out);
        self.state_root.encode(out);
    }
}

impl Decode for Header {
    const MIN_BYTES: usize = 4 + 8 + 32 * 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            chain_id: r.string(MAX_CHAIN_ID_BYTES, "header.chain_id")?,
            height: Decode::decode(r)?,
            parent: Decode::decode(r)?,
            proposer: Decode::decode(r)?,
            tx_root: Decode::decode(r)?,
            state_root: Decode::decode(r)?,
        })
    }
}

/// A block: header and transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// The transactions, applied in order.
    pub txs: Vec<SignedTransaction>,
}

impl Encode for Block {
    fn encode(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        encode_slice(&self.txs, out);
    }
}

impl Decode for Block {
    const MIN_BYTES: usize = Header::MIN_BYTES + 4;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            header: Decode::decode(r)?,
            txs: r.vec(MAX_BLOCK_TXS, "block.txs")?,
        })
    }
}
