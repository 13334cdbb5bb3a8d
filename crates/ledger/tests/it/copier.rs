//! n3v4m (3 validators, 4 miners) over many epochs with commit-reveal: two validators evaluate
//! honestly, one copies the last revealed weights. Miner quality changes every few epochs. The
//! copier must earn fewer dividends per unit of stake than either honest validator.

use std::collections::BTreeMap;

use agora_crypto::weights_commit;
use agora_ledger::genesis::{Genesis, GenesisStake, GenesisSubnet};
use agora_ledger::state::ChainParams;
use agora_ledger::{Event, State};
use agora_primitives::{Address, Amount, Call, SignedTransaction, SubnetParams};

use crate::harness::{CHAIN, apply, key, tx};

const TEMPO: u64 = 10;
const VALIDATORS: [u8; 3] = [101, 102, 103]; // hotkeys; 103 is the copier
const MINERS: [u8; 4] = [111, 112, 113, 114];

fn genesis() -> State {
    let params = SubnetParams {
        tempo: TEMPO as u16,
        weights_rate_limit: 0,
        commit_reveal_period: 1,
        activity_cutoff: 1000,
        immunity_period: 1000,
        max_uids: 16,
        max_validators: 3,
        yuma3: true,
        liquid_alpha: false,
        ..SubnetParams::defaults()
    };
    let mut balances: Vec<(Address, Amount)> = VALIDATORS
        .iter()
        .chain(&MINERS)
        .map(|&k| (key(k).address(), Amount::agora(10)))
        .collect();
    balances.push((key(1).address(), Amount::agora(1000)));
    Genesis {
        chain_id: CHAIN.into(),
        params: ChainParams::devnet(),
        balances,
        // Equal stake for every validator, each its own owner.
        stakes: VALIDATORS
            .iter()
            .map(|&k| GenesisStake {
                coldkey: key(k).address(),
                hotkey: key(k).address(),
                amount: Amount::agora(1000),
            })
            .collect(),
        subnets: vec![GenesisSubnet {
            netuid: 1,
            owner: key(1).address(),
            emission_share_ppm: 1_000_000,
            params,
        }],
    }
    .into_state()
    .expect("genesis")
}

/// Miner quality in epoch `e`: the best miner rotates every 3 epochs.
fn quality(e: u64) -> Vec<u16> {
    let best = (e / 3) as usize % MINERS.len();
    (0..MINERS.len())
        .map(|m| {
            if m == best {
                65535
            } else {
                8000 + 4000 * m as u16
            }
        })
        .collect()
}

struct Pending {
    values: Vec<u16>,
    salt: [u8; 32],
}

#[test]
fn n3v4m_a_weight_copier_earns_less_per_stake_than_honest_validators() {
    let mut state = genesis();
    let run = |state: &mut State, txs: Vec<SignedTransaction>| -> Vec<Event> {
        let applied = apply(state, txs).expect("block applies");
        *state = applied.state;
        applied.events
    };
    // Register validators first (uids 0..3), then miners (uids 3..7).
    for &k in VALIDATORS.iter().chain(&MINERS) {
        let t = tx(
            &state,
            &key(k),
            Call::Register {
                netuid: 1,
                hotkey: key(k).address(),
                max_burn: Amount::agora(1),
            },
        );
        run(&mut state, vec![t]);
    }
    let miner_uids: Vec<u16> = (3..7).collect();
    let mut pending: BTreeMap<u8, Pending> = BTreeMap::new();
    let mut dividends: BTreeMap<Address, u128> = BTreeMap::new();
    let epochs = 40;
    let mut salt_counter = 0u8;
    let mut salt = || {
        salt_counter = salt_counter.wrapping_add(1);
        [salt_counter; 32]
    };
    while state.height < epochs * TEMPO {
        let h = state.height + 1;
        let epoch = h / TEMPO;
        let mut txs = Vec::new();
        if h % TEMPO == 1 {
            // Window start: honest validators reveal last tempo's commit and commit this tempo's
            // evaluation of the miners.
            for &v in &VALIDATORS[..2] {
                if let Some(p) = pending.remove(&v) {
                    txs.push(tx(
                        &state,
                        &key(v),
                        Call::RevealWeights {
                            netuid: 1,
                            uids: miner_uids.clone(),
                            values: p.values,
                            salt: p.salt,
                        },
                    ));
                }
            }
            run(&mut state, txs);
            let mut txs = Vec::new();
            for &v in &VALIDATORS[..2] {
                let values = quality(epoch);
                let s = salt();
                let commit = weights_commit(1, &miner_uids, &values, &s);
                pending.insert(v, Pending { values, salt: s });
                txs.push(tx(
                    &state,
                    &key(v),
                    Call::CommitWeights { netuid: 1, commit },
                ));
            }
            // The copier reveals its own last commit, then commits a copy of the weights the
            // honest validators revealed just now.
            let copier = VALIDATORS[2];
            if let Some(p) = pending.remove(&copier) {
                txs.push(tx(
                    &state,
                    &key(copier),
                    Call::RevealWeights {
                        netuid: 1,
                        uids: miner_uids.clone(),
                        values: p.values,
                        salt: p.salt,
                    },
                ));
            }
            let revealed = &state.subnets[&1].neurons[0].weights;
            if !revealed.is_empty() {
                let values: Vec<u16> = revealed.iter().map(|&(_, w)| w).collect();
                let s = salt();
                let commit = weights_commit(1, &miner_uids, &values, &s);
                pending.insert(copier, Pending { values, salt: s });
                // The reveal above used this tempo's nonce; sign the commit after it.
                let mut c = tx(
                    &state,
                    &key(copier),
                    Call::CommitWeights { netuid: 1, commit },
                );
                if txs.iter().any(|t| t.tx.sender == key(copier).address()) {
                    c.tx.nonce += 1;
                    c = agora_crypto::sign_tx(&key(copier), c.tx);
                }
                txs.push(c);
            }
            for e in run(&mut state, txs) {
                record(&e, &mut dividends);
            }
            continue;
        }
        for e in run(&mut state, txs) {
            record(&e, &mut dividends);
        }
    }
    let per_stake = |k: u8| dividends.get(&key(k).address()).copied().unwrap_or(0);
    let (h1, h2, copier) = (per_stake(101), per_stake(102), per_stake(103));
    eprintln!("dividends: honest {h1} {h2} copier {copier}");
    assert!(
        h1 > 0 && h2 > 0,
        "honest validators earn dividends: {h1} {h2}"
    );
    assert!(
        copier < h1 && copier < h2,
        "copier {copier} must earn less than honest {h1}, {h2} (equal stakes)"
    );
}

fn record(e: &Event, dividends: &mut BTreeMap<Address, u128>) {
    if let Event::EpochPaid {
        hotkey, validator, ..
    } = e
    {
        *dividends.entry(*hotkey).or_default() += validator.0;
    }
}
