//! Serving escrow and settlement: clients prepay into escrow; miners are paid per receipt.
//!
//! - `EscrowDeposit` moves balance into the sender's escrow.
//! - `EscrowWithdraw` moves escrow into unbonding: it returns to the balance after
//!   `unbonding_blocks`, so receipts the gateway already countersigned can still be settled.
//! - `Settle` checks every receipt (both signatures over the chain's receipt bytes, not expired,
//!   expiry within `MAX_RECEIPT_TTL`, not settled before, cost representable, escrow enough) and
//!   moves each receipt's cost from the gateway's escrow to the miner's balance. The receipt's id
//!   (BLAKE3 of its signing bytes) is remembered until its expiry height passes, so a receipt is
//!   paid at most once. Any bad receipt refuses the whole transaction.

use agora_primitives::{Address, Amount, Hash, MAX_RECEIPT_TTL, SignedReceipt};

use crate::state::{State, Unbonding};
use crate::{Event, TxError};

impl State {
    /// The escrow of `account`.
    pub fn escrow_of(&self, account: &Address) -> Amount {
        self.escrow.get(account).copied().unwrap_or_default()
    }

    pub(crate) fn escrow_deposit(
        &mut self,
        sender: &Address,
        amount: Amount,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        if amount.is_zero() {
            return Err(TxError::ZeroAmount("escrow deposit"));
        }
        self.debit(sender, amount)?;
        let e = self.escrow.entry(*sender).or_default();
        *e = e
            .checked_add(amount)
            .ok_or(TxError::AmountOverflow("escrow"))?;
        events.push(Event::EscrowDeposited {
            account: *sender,
            amount,
        });
        Ok(())
    }

    pub(crate) fn escrow_withdraw(
        &mut self,
        sender: &Address,
        amount: Amount,
        height: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        if amount.is_zero() {
            return Err(TxError::ZeroAmount("escrow withdrawal"));
        }
        let have = self.escrow_of(sender);
        let left = have
            .checked_sub(amount)
            .ok_or(TxError::InsufficientEscrow {
                account: *sender,
                have,
                need: amount,
            })?;
        if left.is_zero() {
            self.escrow.remove(sender);
        } else {
            self.escrow.insert(*sender, left);
        }
        let release_height = height.saturating_add(self.params.unbonding_blocks);
        self.unbonding.push(Unbonding {
            release_height,
            coldkey: *sender,
            amount,
        });
        events.push(Event::EscrowWithdrawn {
            account: *sender,
            amount,
            release_height,
        });
        Ok(())
    }

    pub(crate) fn settle(
        &mut self,
        receipts: &[SignedReceipt],
        height: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        if receipts.is_empty() {
            return Err(TxError::InvalidReceipt {
                index: 0,
                reason: "a settlement needs at least one receipt",
            });
        }
        // Check everything first, on a scratch copy of the touched escrows.
        let mut escrows: std::collections::BTreeMap<Address, Amount> =
            std::collections::BTreeMap::new();
        let mut ids: Vec<Hash> = Vec::with_capacity(receipts.len());
        let mut costs = Vec::with_capacity(receipts.len());
        for (index, s) in receipts.iter().enumerate() {
            let r = &s.receipt;
            let bad = |reason| TxError::InvalidReceipt { index, reason };
            if r.expiry_height < height {
                return Err(bad("the receipt expired before settlement"));
            }
            if r.expiry_height > height.saturating_add(MAX_RECEIPT_TTL) {
                return Err(bad("the receipt's expiry is too far in the future"));
            }
            let bytes = r.signing_bytes(&self.chain_id);
            agora_crypto::verify(&r.miner, &bytes, &s.miner_signature)
                .map_err(|_| bad("the miner's signature does not verify"))?;
            agora_crypto::verify(&r.gateway, &bytes, &s.gateway_signature).map_err(|_| {
                bad("the gateway never authorised it: its countersignature does not verify")
            })?;
            let id = agora_crypto::hash(&bytes);
            if self.settled.contains_key(&id) || ids.contains(&id) {
                return Err(TxError::ReceiptAlreadySettled { index, id });
            }
            let cost = r.cost().ok_or(TxError::AmountOverflow("receipt cost"))?;
            let have = match escrows.get(&r.gateway) {
                Some(a) => *a,
                None => self.escrow_of(&r.gateway),
            };
            let left = have.checked_sub(cost).ok_or(TxError::InsufficientEscrow {
                account: r.gateway,
                have,
                need: cost,
            })?;
            escrows.insert(r.gateway, left);
            ids.push(id);
            costs.push(cost);
        }
        for (gateway, left) in escrows {
            if left.is_zero() {
                self.escrow.remove(&gateway);
            } else {
                self.escrow.insert(gateway, left);
            }
        }
        for ((s, id), cost) in receipts.iter().zip(ids).zip(costs) {
            let r = &s.receipt;
            let acc = self.accounts.entry(r.miner).or_default();
            // Cannot overflow: the amount left an escrow of the same total supply.
            acc.balance = Amount(acc.balance.0.saturating_add(cost.0));
            self.settled.insert(id, r.expiry_height);
            events.push(Event::ReceiptPaid {
                id,
                miner: r.miner,
                gateway: r.gateway,
                amount: cost,
            });
        }
        Ok(())
    }

    /// Forget settled receipt ids whose expiry has passed (they can no longer be settled).
    pub(crate) fn prune_settled(&mut self, height: u64) {
        self.settled.retain(|_, expiry| *expiry >= height);
    }
}
