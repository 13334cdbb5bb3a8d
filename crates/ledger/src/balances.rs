//! Balances: transfers, and fees (a share burned, the rest to the block proposer).

use agora_primitives::{Address, Amount};

use crate::{Event, State, TxError};

impl State {
    /// Take `amount` from `account`'s balance.
    pub(crate) fn debit(&mut self, account: &Address, amount: Amount) -> Result<(), TxError> {
        let acc = self.accounts.entry(*account).or_default();
        acc.balance = acc
            .balance
            .checked_sub(amount)
            .ok_or(TxError::InsufficientBalance {
                account: *account,
                have: acc.balance,
                need: amount,
            })?;
        Ok(())
    }

    /// Add `amount` to `account`'s balance.
    pub(crate) fn credit(&mut self, account: &Address, amount: Amount) -> Result<(), TxError> {
        let acc = self.accounts.entry(*account).or_default();
        acc.balance = acc
            .balance
            .checked_add(amount)
            .ok_or(TxError::AmountOverflow("balance"))?;
        Ok(())
    }

    /// Record `amount` as burned.
    pub(crate) fn burn(&mut self, amount: Amount) -> Result<(), TxError> {
        self.burned = self
            .burned
            .checked_add(amount)
            .ok_or(TxError::AmountOverflow("burned"))?;
        Ok(())
    }

    pub(crate) fn transfer(
        &mut self,
        from: &Address,
        to: &Address,
        amount: Amount,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        if amount.is_zero() {
            return Err(TxError::ZeroAmount("transfer"));
        }
        self.debit(from, amount)?;
        self.credit(to, amount)?;
        events.push(Event::Transfer {
            from: *from,
            to: *to,
            amount,
        });
        Ok(())
    }

    /// Charge a fee: `fee_burn_ppm` of it burned, the rest to the proposer.
    pub(crate) fn charge_fee(
        &mut self,
        payer: &Address,
        fee: Amount,
        proposer: &Address,
    ) -> Result<(), TxError> {
        self.debit(payer, fee)?;
        let burned = fee
            .mul_div(u128::from(self.params.fee_burn_ppm), 1_000_000)
            .ok_or(TxError::AmountOverflow("fee"))?;
        let to_proposer = fee
            .checked_sub(burned)
            .ok_or(TxError::AmountOverflow("fee"))?;
        self.burn(burned)?;
        self.credit(proposer, to_proposer)
    }
}

#[cfg(test)]
mod tests {
    use crate::state::tests::{addr, small};
    use agora_primitives::Amount;

    #[test]
    fn a_fee_is_split_between_burn_and_proposer() {
        let mut s = small();
        s.charge_fee(&addr(1), Amount(1_001), &addr(2)).unwrap();
        // 50% burned, rounded down; the proposer gets the rest.
        assert_eq!(s.burned, Amount(500));
        assert_eq!(
            s.account(&addr(2)).balance,
            Amount(Amount::agora(1000).0 + 501)
        );
        assert_eq!(
            s.account(&addr(1)).balance,
            Amount(Amount::agora(1000).0 - 1_001)
        );
    }

    #[test]
    fn a_transfer_of_zero_or_more_than_the_balance_is_refused() {
        let mut s = small();
        let mut events = Vec::new();
        assert!(
            s.transfer(&addr(1), &addr(2), Amount::ZERO, &mut events)
                .is_err()
        );
        assert!(
            s.transfer(&addr(1), &addr(2), Amount::agora(1001), &mut events)
                .is_err()
        );
        s.transfer(&addr(1), &addr(2), Amount::agora(1000), &mut events)
            .unwrap();
        assert_eq!(s.account(&addr(1)).balance, Amount::ZERO);
    }
}
