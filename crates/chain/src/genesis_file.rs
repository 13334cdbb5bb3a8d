//! The genesis file (JSON): chain id, chain parameters, balances, stakes and subnets.
//!
//! ```json
//! {
//!   "chain_id": "agora-devnet",
//!   "params": { "fee_burn_ppm": 500000, "unbonding_blocks": 100, "max_chain_validators": 64,
//!               "subnet_create_cost": "100", "emission_per_block": "1", "min_burn": "0.001",
//!               "max_burn": "100", "max_take": 11796 },
//!   "balances": [ { "address": "<64 hex>", "amount": "1000" } ],
//!   "stakes":   [ { "coldkey": "<64 hex>", "hotkey": "<64 hex>", "amount": "500" } ],
//!   "subnets":  [ { "netuid": 1, "owner": "<64 hex>", "emission_share_ppm": 1000000,
//!                   "params": { "tempo": 360, "model_hash": "<64 hex>", "numerics": 2 } } ]
//! }
//! ```
//! Amounts are decimal AGORA strings (9 decimals). `params` (chain and subnet) may be partial:
//! missing fields take the defaults. Unknown fields are refused.

use agora_ledger::genesis::{Genesis, GenesisStake, GenesisSubnet};
use agora_ledger::state::ChainParams;
use agora_primitives::{Address, Amount, Hash, SubnetParams};
use anyhow::{Context, Result, anyhow};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    chain_id: String,
    #[serde(default)]
    params: ChainParamsFile,
    #[serde(default)]
    balances: Vec<Balance>,
    #[serde(default)]
    stakes: Vec<Stake>,
    #[serde(default)]
    subnets: Vec<SubnetFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainParamsFile {
    fee_burn_ppm: Option<u32>,
    unbonding_blocks: Option<u64>,
    max_chain_validators: Option<u16>,
    subnet_create_cost: Option<String>,
    emission_per_block: Option<String>,
    min_burn: Option<String>,
    max_burn: Option<String>,
    max_take: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Balance {
    address: String,
    amount: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stake {
    coldkey: String,
    hotkey: String,
    amount: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubnetFile {
    netuid: u16,
    owner: String,
    emission_share_ppm: u32,
    #[serde(default)]
    params: SubnetParamsFile,
}

/// Subnet hyperparameters, each optional (missing: the default, or the current value).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetParamsFile {
    tempo: Option<u16>,
    kappa: Option<u16>,
    bonds_penalty: Option<u16>,
    bonds_moving_average: Option<u64>,
    yuma3: Option<bool>,
    liquid_alpha: Option<bool>,
    alpha_low: Option<u16>,
    alpha_high: Option<u16>,
    alpha_sigmoid_steepness: Option<i16>,
    max_uids: Option<u16>,
    max_validators: Option<u16>,
    immunity_period: Option<u16>,
    activity_cutoff: Option<u16>,
    min_allowed_weights: Option<u16>,
    weights_rate_limit: Option<u16>,
    commit_reveal_period: Option<u16>,
    /// 64 hexadecimal digits (all zeros: no registered model).
    model_hash: Option<String>,
    numerics: Option<u32>,
}

impl SubnetParamsFile {
    /// Apply the given fields on top of `base`; an error names a malformed `model_hash`.
    pub fn over(&self, base: SubnetParams) -> Result<SubnetParams> {
        let model_hash = match &self.model_hash {
            Some(h) => h.parse::<Hash>().map_err(|e| {
                anyhow!("params.model_hash: {e} (the model file's BLAKE3, 64 hex digits)")
            })?,
            None => base.model_hash,
        };
        Ok(SubnetParams {
            tempo: self.tempo.unwrap_or(base.tempo),
            kappa: self.kappa.unwrap_or(base.kappa),
            bonds_penalty: self.bonds_penalty.unwrap_or(base.bonds_penalty),
            bonds_moving_average: self
                .bonds_moving_average
                .unwrap_or(base.bonds_moving_average),
            yuma3: self.yuma3.unwrap_or(base.yuma3),
            liquid_alpha: self.liquid_alpha.unwrap_or(base.liquid_alpha),
            alpha_low: self.alpha_low.unwrap_or(base.alpha_low),
            alpha_high: self.alpha_high.unwrap_or(base.alpha_high),
            alpha_sigmoid_steepness: self
                .alpha_sigmoid_steepness
                .unwrap_or(base.alpha_sigmoid_steepness),
            max_uids: self.max_uids.unwrap_or(base.max_uids),
            max_validators: self.max_validators.unwrap_or(base.max_validators),
            immunity_period: self.immunity_period.unwrap_or(base.immunity_period),
            activity_cutoff: self.activity_cutoff.unwrap_or(base.activity_cutoff),
            min_allowed_weights: self.min_allowed_weights.unwrap_or(base.min_allowed_weights),
            weights_rate_limit: self.weights_rate_limit.unwrap_or(base.weights_rate_limit),
            commit_reveal_period: self
                .commit_reveal_period
                .unwrap_or(base.commit_reveal_period),
            model_hash,
            numerics: self.numerics.unwrap_or(base.numerics),
        })
    }

    /// Parse a JSON object of hyperparameters.
    pub fn parse(text: &str) -> Result<Self> {
        serde_json::from_str(text).context("hyperparameters JSON")
    }
}

fn amount(text: &str, field: &str) -> Result<Amount> {
    text.parse().with_context(|| field.to_string())
}

fn address(text: &str, field: &str) -> Result<Address> {
    text.parse().map_err(|e| anyhow!("{field}: {e}"))
}

/// Parse a genesis file's text.
pub fn parse(text: &str) -> Result<Genesis> {
    let f: File = serde_json::from_str(text).context("genesis JSON")?;
    let d = ChainParams::devnet();
    let p = &f.params;
    let opt_amount = |v: &Option<String>, field: &str, default: Amount| -> Result<Amount> {
        v.as_deref().map_or(Ok(default), |t| amount(t, field))
    };
    let params = ChainParams {
        fee_burn_ppm: p.fee_burn_ppm.unwrap_or(d.fee_burn_ppm),
        unbonding_blocks: p.unbonding_blocks.unwrap_or(d.unbonding_blocks),
        max_chain_validators: p.max_chain_validators.unwrap_or(d.max_chain_validators),
        subnet_create_cost: opt_amount(
            &p.subnet_create_cost,
            "params.subnet_create_cost",
            d.subnet_create_cost,
        )?,
        emission_per_block: opt_amount(
            &p.emission_per_block,
            "params.emission_per_block",
            d.emission_per_block,
        )?,
        min_burn: opt_amount(&p.min_burn, "params.min_burn", d.min_burn)?,
        max_burn: opt_amount(&p.max_burn, "params.max_burn", d.max_burn)?,
        max_take: p.max_take.unwrap_or(d.max_take),
    };
    let balances = f
        .balances
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Ok((
                address(&b.address, &format!("balances[{i}].address"))?,
                amount(&b.amount, &format!("balances[{i}].amount"))?,
            ))
        })
        .collect::<Result<_>>()?;
    let stakes = f
        .stakes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(GenesisStake {
                coldkey: address(&s.coldkey, &format!("stakes[{i}].coldkey"))?,
                hotkey: address(&s.hotkey, &format!("stakes[{i}].hotkey"))?,
                amount: amount(&s.amount, &format!("stakes[{i}].amount"))?,
            })
        })
        .collect::<Result<_>>()?;
    let subnets = f
        .subnets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(GenesisSubnet {
                netuid: s.netuid,
                owner: address(&s.owner, &format!("subnets[{i}].owner"))?,
                emission_share_ppm: s.emission_share_ppm,
                params: s.params.over(SubnetParams::defaults())?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Genesis {
        chain_id: f.chain_id,
        params,
        balances,
        stakes,
        subnets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_params_register_a_model_and_numerics_and_name_a_bad_hash() {
        let hash = "ab".repeat(32);
        let file =
            SubnetParamsFile::parse(&format!(r#"{{"model_hash": "{hash}", "numerics": 2}}"#))
                .unwrap();
        let params = file.over(SubnetParams::defaults()).unwrap();
        assert_eq!(params.model_hash, hash.parse::<Hash>().unwrap());
        assert_eq!(params.numerics, 2);
        assert_eq!(params.tempo, SubnetParams::defaults().tempo);
        // Left out: the base's values (the current ones, for `subnet-set`).
        let kept = SubnetParamsFile::parse(r#"{"tempo": 20}"#)
            .unwrap()
            .over(params.clone())
            .unwrap();
        assert_eq!(
            (kept.model_hash, kept.numerics, kept.tempo),
            (params.model_hash, 2, 20)
        );
        let bad = SubnetParamsFile::parse(r#"{"model_hash": "xyz"}"#)
            .unwrap()
            .over(SubnetParams::defaults())
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("params.model_hash") && bad.contains("64 hex digits"),
            "{bad}"
        );
        // Unknown fields are refused by name.
        let unknown = SubnetParamsFile::parse(r#"{"model": "x"}"#).unwrap_err();
        let chain = format!("{unknown:#}");
        assert!(chain.contains("unknown field `model`"), "{chain}");
    }
}
