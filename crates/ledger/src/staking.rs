//! Staking: stake to a hotkey (delegation when the staker does not own it), unstake through an
//! unbonding period, and the validator take (commission).

use agora_primitives::{Address, Amount};

use crate::state::{Hotkey, Unbonding};
use crate::{Event, State, TxError};

impl State {
    pub(crate) fn stake(
        &mut self,
        coldkey: &Address,
        hotkey: &Address,
        amount: Amount,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        if amount.is_zero() {
            return Err(TxError::ZeroAmount("stake"));
        }
        self.debit(coldkey, amount)?;
        // A hotkey nobody owns yet becomes the staker's.
        self.hotkeys.entry(*hotkey).or_insert(Hotkey {
            owner: *coldkey,
            take: 0,
        });
        let s = self.stakes.entry((*hotkey, *coldkey)).or_default();
        *s = s
            .checked_add(amount)
            .ok_or(TxError::AmountOverflow("stake"))?;
        events.push(Event::Staked {
            coldkey: *coldkey,
            hotkey: *hotkey,
            amount,
        });
        Ok(())
    }

    pub(crate) fn unstake(
        &mut self,
        coldkey: &Address,
        hotkey: &Address,
        amount: Amount,
        height: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        if amount.is_zero() {
            return Err(TxError::ZeroAmount("unstake"));
        }
        let key = (*hotkey, *coldkey);
        let have = self.stakes.get(&key).copied().unwrap_or_default();
        let left = have.checked_sub(amount).ok_or(TxError::InsufficientStake {
            coldkey: *coldkey,
            hotkey: *hotkey,
            have,
            need: amount,
        })?;
        if left.is_zero() {
            self.stakes.remove(&key);
        } else {
            self.stakes.insert(key, left);
        }
        let release_height = height.saturating_add(self.params.unbonding_blocks);
        // Entries are appended in height order, so the list stays sorted by release height.
        self.unbonding.push(Unbonding {
            release_height,
            coldkey: *coldkey,
            amount,
        });
        events.push(Event::Unstaked {
            coldkey: *coldkey,
            hotkey: *hotkey,
            amount,
            release_height,
        });
        Ok(())
    }

    pub(crate) fn set_take(&mut self, hotkey: &Address, take: u16) -> Result<(), TxError> {
        if take > self.params.max_take {
            return Err(TxError::TakeTooHigh {
                take,
                max: self.params.max_take,
            });
        }
        let entry = self.hotkeys.entry(*hotkey).or_insert(Hotkey {
            owner: *hotkey,
            take: 0,
        });
        entry.take = take;
        Ok(())
    }

    /// Return matured unbonding entries to their owners' balances.
    pub(crate) fn release_unbonding(&mut self, height: u64, events: &mut Vec<Event>) {
        let due = self
            .unbonding
            .partition_point(|u| u.release_height <= height);
        for u in self.unbonding.drain(..due).collect::<Vec<_>>() {
            let acc = self.accounts.entry(u.coldkey).or_default();
            // Cannot overflow: the amount left a balance of the same total supply.
            acc.balance = Amount(acc.balance.0.saturating_add(u.amount.0));
            events.push(Event::Unbonded {
                coldkey: u.coldkey,
                amount: u.amount,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::state::tests::{addr, small};
    use agora_primitives::Amount;

    #[test]
    fn unbonding_returns_in_release_order_and_only_when_due() {
        let mut s = small();
        let mut ev = Vec::new();
        s.unstake(&addr(9), &addr(10), Amount::agora(5), 1, &mut ev)
            .unwrap();
        s.unstake(&addr(9), &addr(11), Amount::agora(20), 2, &mut ev)
            .unwrap();
        assert!(
            !s.stakes.contains_key(&(addr(11), addr(9))),
            "a stake unstaked to zero is removed"
        );
        let release = 1 + s.params.unbonding_blocks;
        s.release_unbonding(release - 1, &mut ev);
        assert_eq!(s.account(&addr(9)).balance, Amount::ZERO);
        s.release_unbonding(release, &mut ev);
        assert_eq!(s.account(&addr(9)).balance, Amount::agora(5));
        s.release_unbonding(release + 1, &mut ev);
        assert_eq!(s.account(&addr(9)).balance, Amount::agora(25));
        assert!(s.unbonding.is_empty());
    }

    #[test]
    fn stake_creates_the_hotkey_for_its_first_staker_and_take_is_capped() {
        let mut s = small();
        let mut ev = Vec::new();
        s.stake(&addr(1), &addr(42), Amount::agora(1), &mut ev)
            .unwrap();
        assert_eq!(s.hotkeys[&addr(42)].owner, addr(1));
        assert!(s.set_take(&addr(42), s.params.max_take + 1).is_err());
        s.set_take(&addr(42), 100).unwrap();
        assert_eq!(s.hotkeys[&addr(42)].take, 100);
    }
}
