//! The JSON views of ledger state shared by the chain API and `agora query`.

use agora_ledger::State;
use agora_primitives::{Address, NetUid};
use serde_json::{Value, json};

/// An account: balance, nonce and stakes.
pub fn account(state: &State, address: &Address) -> Value {
    let acc = state.account(address);
    let stakes: Vec<Value> = state
        .stakes
        .iter()
        .filter(|((_, c), _)| c == address)
        .map(|((h, _), s)| json!({ "hotkey": h.to_string(), "amount": s.to_string() }))
        .collect();
    json!({
        "address": address.to_string(),
        "balance": acc.balance.to_string(),
        "nonce": acc.nonce,
        "escrow": state.escrow_of(address).to_string(),
        "stakes": stakes,
        "height": state.height,
    })
}

/// A subnet and its hyperparameters, or `None` when it does not exist.
pub fn subnet(state: &State, netuid: NetUid) -> Option<Value> {
    let s = state.subnets.get(&netuid)?;
    let p = &s.params;
    Some(json!({
        "netuid": netuid,
        "owner": s.owner.to_string(),
        "neurons": s.neurons.len(),
        "registration_price": s.burn.to_string(),
        "pending_emission": s.pending_emission.to_string(),
        "last_epoch_block": s.last_epoch_block,
        "emission_share_ppm": s.emission_share_ppm,
        "params": {
            "tempo": p.tempo, "kappa": p.kappa, "bonds_penalty": p.bonds_penalty,
            "bonds_moving_average": p.bonds_moving_average, "yuma3": p.yuma3,
            "liquid_alpha": p.liquid_alpha, "alpha_low": p.alpha_low, "alpha_high": p.alpha_high,
            "alpha_sigmoid_steepness": p.alpha_sigmoid_steepness, "max_uids": p.max_uids,
            "max_validators": p.max_validators, "immunity_period": p.immunity_period,
            "activity_cutoff": p.activity_cutoff, "min_allowed_weights": p.min_allowed_weights,
            "weights_rate_limit": p.weights_rate_limit, "commit_reveal_period": p.commit_reveal_period,
            "model_hash": p.model_hash.to_string(), "numerics": p.numerics,
        },
    }))
}

/// One JSON object per uid.
/// `None` when the subnet does not exist.
pub fn metagraph(state: &State, netuid: NetUid) -> Option<Vec<Value>> {
    let s = state.subnets.get(&netuid)?;
    Some(s
        .neurons
        .iter()
        .enumerate()
        .map(|(uid, n)| {
            let o = &n.outputs;
            json!({
                "uid": uid,
                "hotkey": n.hotkey.to_string(),
                "stake": state.hotkey_stake(&n.hotkey).to_string(),
                "registered_at": n.registered_at,
                "last_update": n.last_update,
                "validator_permit": n.validator_permit,
                "active": o.active,
                "stake_weight": o.stake_weight,
                "consensus": o.consensus,
                "incentive": o.incentive,
                "dividends": o.dividends,
                "validator_trust": o.validator_trust,
                "emission": agora_primitives::Amount(o.server_emission.0 + o.validator_emission.0).to_string(),
                "weights": n.weights,
                "bonds": n.bonds,
                "serving": n.serve.as_ref().map(|s| s.addresses.clone()),
            })
        })
        .collect())
}
