//! One epoch of Yuma Consensus, step by step as in `specs/yuma.md`.
//!
//! The reference materialises dense `n x n` temporaries in several places (interpolation, the
//! bond EMA, the liquid-alpha matrix). Here every step walks only the stored entries, so an epoch
//! costs O(nnz(W) + nnz(B) + n log n) time and O(nnz + n) memory; the arithmetic on each entry is
//! the reference's, in the same order, so the results are identical.

use std::borrow::Cow;

use substrate_fixed::types::{I64F64, I96F32};

use crate::exp::{Memo, exp_safe};
use crate::fixed::{
    Divisor, Fx, ONE, ZERO, add, clamp, div, div64, mul, mul_or_zero, normalize, proportion_to_u16,
    recip_of_at_least_one, sum, u16_proportion,
};
use crate::sparse::Sparse;
use crate::{EpochInput, EpochOutput, Hyperparameters, InputError};

/// Run one epoch. Fails only on a malformed input (see [`EpochInput::validate`]); never panics.
pub fn epoch(input: &EpochInput) -> Result<EpochOutput, InputError> {
    let sorted = input.check()?;
    Ok(run(input, !sorted))
}

/// The epoch on a checked input; `sort_rows` when some input row is out of uid order.
fn run(input: &EpochInput, sort_rows: bool) -> EpochOutput {
    let n = usize::from(input.n);
    let hp = &input.hyperparameters;
    let owner = input.owner_uid.map(usize::from);

    // 1. Activity.
    let active: Vec<bool> = input
        .last_update
        .iter()
        .map(|&updated| updated.saturating_add(input.activity_cutoff) >= input.current_block)
        .collect();

    // 2. Stake: threshold filter (owner exempt), normalised in I64F64, cast to I32F32.
    let stake = normalized_stake(input, owner);

    // 3. Permits: the owner's previous permit counts; new permits go to the top stakes.
    let mut permits = input.validator_permits.clone();
    if let Some(o) = owner {
        permits[o] = true;
    }
    let mut new_permits = top_k_nonzero(&stake, usize::from(hp.max_allowed_validators));
    if let Some(o) = owner {
        new_permits[o] = true;
    }

    // 4. Active stake.
    let mut active_stake: Vec<Fx> = (0..n)
        .map(|i| {
            if active[i] && permits[i] {
                stake[i]
            } else {
                ZERO
            }
        })
        .collect();
    normalize(&mut active_stake);

    // 5. Weights: permitted rows, no self weight (except the owner's), no weight on a uid that
    //    registered after the setter's last update; rows normalised.
    let nnz_w: usize = input.weights.iter().map(Vec::len).sum();
    let mut weights = Sparse::with_capacity(n, nnz_w);
    for (i, row) in input.weights.iter().enumerate() {
        if permits[i] {
            let last_update = input.last_update[i];
            for &(j, w) in row {
                let ju = usize::from(j);
                if (ju != i || owner == Some(i)) && last_update > input.block_at_registration[ju] {
                    weights.push(j, Fx::from_bits(i64::from(w) << 32));
                }
            }
        }
        weights.end_row_checked(sort_rows);
        let r = weights.range(i);
        let total = sum(weights.vals[r.clone()].iter().copied());
        if total > ZERO {
            let d = Divisor::new(total);
            for v in &mut weights.vals[r] {
                *v = d.divide(*v);
            }
        }
    }

    // 6. Consensus.
    let kappa = u16_proportion(hp.kappa);
    let consensus = weighted_median_cols(&active_stake, &weights, n, kappa);

    // 7. Clip at consensus; validator trust; 8. incentive (accumulated row by row in uid order,
    //    as the reference's matrix product does).
    let mut validator_trust = vec![ZERO; n];
    let mut incentive = vec![ZERO; n];
    let mut clipped = Sparse::with_capacity(n, weights.cols.len());
    for i in 0..n {
        let s = active_stake[i];
        let (cols, vals) = weights.row(i);
        let mut total = ZERO;
        for (&j, &w) in cols.iter().zip(vals) {
            let c = consensus[usize::from(j)];
            let v = if c < w { c } else { w };
            if c < w && c <= ZERO {
                continue;
            }
            clipped.push(j, v);
            total = add(total, v);
            let r = &mut incentive[usize::from(j)];
            *r = add(*r, mul(s, v));
        }
        clipped.end_row();
        validator_trust[i] = total;
    }
    normalize(&mut incentive);

    // 9. Weights for bonds, and the recently-registered mask on stored bonds.
    let beta = u16_proportion(hp.bonds_penalty);
    let weights_for_bonds = interpolate(&weights, &clipped, beta);
    let last_tempo = if input.last_mechanism_step_block == 0 {
        input.current_block.saturating_sub(input.tempo)
    } else {
        input.last_mechanism_step_block.saturating_add(1)
    };
    let stored_bonds = |to_fixed: fn(u16) -> Fx| -> Sparse {
        let nnz: usize = input.bonds.iter().map(Vec::len).sum();
        let mut out = Sparse::with_capacity(n, nnz);
        for row in &input.bonds {
            for &(j, b) in row {
                if last_tempo > input.block_at_registration[usize::from(j)] {
                    out.push(j, to_fixed(b));
                }
            }
            out.end_row_checked(sort_rows);
        }
        out
    };

    // 10./11. Bonds and dividends.
    let (mut dividends, bonds_out) = if hp.yuma3 {
        let mut col_sums = vec![ZERO; n];
        let ema = if hp.liquid_alpha && consensus.iter().any(|&c| c != ZERO) {
            // Read the stored bonds in place (masked and converted on the fly).
            let keep: Vec<bool> = input
                .block_at_registration
                .iter()
                .map(|&r| last_tempo > r)
                .collect();
            let rows: Cow<'_, [Vec<(u16, u16)>]> = if sort_rows {
                let mut rows = input.bonds.clone();
                rows.iter_mut()
                    .for_each(|r| r.sort_unstable_by_key(|&(j, _)| j));
                Cow::Owned(rows)
            } else {
                Cow::Borrowed(&input.bonds)
            };
            ema_liquid_alpha(
                &weights_for_bonds,
                &rows,
                &keep,
                &consensus,
                hp,
                &mut col_sums,
            )
        } else {
            let bonds = stored_bonds(u16_proportion);
            ema_fixed_alpha(&weights_for_bonds, &bonds, fixed_alpha(hp), &mut col_sums)
        };
        // One pass: dividends from the column-normalised bonds (normalised on the fly), and the
        // bonds to persist (the EMA itself, for uids with a new permit).
        let divisors: Vec<Divisor> = col_sums.iter().map(|&s| Divisor::or_identity(s)).collect();
        let mut persisted = Vec::with_capacity(n);
        let dividends: Vec<Fx> = (0..n)
            .map(|i| {
                let (cols, vals) = ema.row(i);
                let mut total = ZERO;
                for (&j, &b) in cols.iter().zip(vals) {
                    let j = usize::from(j);
                    let normalized = divisors[j].divide(b);
                    total = add(total, mul(normalized, incentive[j]));
                }
                persisted.push(if new_permits[i] {
                    to_stored(cols, vals)
                } else {
                    Vec::new()
                });
                mul_or_zero(total, active_stake[i])
            })
            .collect();
        (dividends, persisted)
    } else {
        let mut bonds = stored_bonds(|b| Fx::from_bits(i64::from(b) << 32));
        bonds.col_normalize(n);
        let mut delta = Sparse::with_capacity(n, weights_for_bonds.cols.len());
        for (i, &s) in active_stake.iter().enumerate() {
            let (cols, vals) = weights_for_bonds.row(i);
            for (&j, &w) in cols.iter().zip(vals) {
                delta.push(j, mul(w, s));
            }
            delta.end_row();
        }
        delta.col_normalize(n);
        let mut ema = ema_fixed_alpha(&delta, &bonds, fixed_alpha(hp), &mut vec![ZERO; n]);
        ema.col_normalize(n);
        let dividends: Vec<Fx> = (0..n)
            .map(|i| {
                let (cols, vals) = ema.row(i);
                cols.iter().zip(vals).fold(ZERO, |acc, (&j, &b)| {
                    add(acc, mul(incentive[usize::from(j)], b))
                })
            })
            .collect();
        ema.col_max_upscale(n);
        let persisted = (0..n)
            .map(|i| {
                let (cols, vals) = ema.row(i);
                if new_permits[i] {
                    to_stored(cols, vals)
                } else {
                    Vec::new()
                }
            })
            .collect();
        (dividends, persisted)
    };
    normalize(&mut dividends);

    // 12. Persisted bonds (computed above): only uids with a new permit keep a row.

    // 13. Emission.
    let combined: Vec<Fx> = incentive
        .iter()
        .zip(&dividends)
        .map(|(&i, &d)| add(i, d))
        .collect();
    let emission_sum = sum(combined.iter().copied());
    let (server, validator, combined) = if emission_sum == ZERO {
        let fallback = if sum(active_stake.iter().copied()) == ZERO {
            &stake
        } else {
            &active_stake
        };
        (incentive.clone(), fallback.clone(), fallback.clone())
    } else {
        let share = |v: &[Fx]| v.iter().map(|&x| div(x, emission_sum)).collect::<Vec<Fx>>();
        (share(&incentive), share(&dividends), share(&combined))
    };
    let amounts = |v: &[Fx]| -> Vec<u64> { v.iter().map(|&x| amount(x, input.emission)).collect() };
    let to_u16 = |v: &[Fx]| -> Vec<u16> { v.iter().map(|&x| proportion_to_u16(x)).collect() };

    EpochOutput {
        active,
        stake_weight: to_u16(&stake),
        validator_permits: new_permits,
        consensus: to_u16(&consensus),
        incentive: to_u16(&incentive),
        dividends: to_u16(&dividends),
        validator_trust: to_u16(&validator_trust),
        bonds: bonds_out,
        server_emission: amounts(&server),
        validator_emission: amounts(&validator),
        combined_emission: amounts(&combined),
    }
}

/// A bond row as stored: each proportion as `floor(x * 65535)`.
fn to_stored(cols: &[u16], vals: &[Fx]) -> Vec<(u16, u16)> {
    cols.iter()
        .zip(vals)
        .map(|(&j, &b)| (j, proportion_to_u16(b)))
        .collect()
}

/// `true` for non-zero entries among the top `k` after a stable ascending sort (ties: the lower
/// index sorts first and is dropped first); with fewer than `k` entries only the non-zero test.
fn top_k_nonzero(values: &[Fx], k: usize) -> Vec<bool> {
    let n = values.len();
    let mut result: Vec<bool> = values.iter().map(|&v| v != ZERO).collect();
    if n < k {
        return result;
    }
    if n > k {
        // The n - k smallest under a stable ascending sort are the n - k smallest by
        // (value, index): select them in linear time.
        let mut order: Vec<usize> = (0..n).collect();
        order.select_nth_unstable_by_key(n - k - 1, |&i| (values[i], i));
        for &i in &order[..n - k] {
            result[i] = false;
        }
    }
    result
}

/// `floor(I96F32(x) * I96F32(emission))` as a saturating `u64`, as the reference computes it:
/// the fixed-point product of `x` (32 fractional bits) and an integer is `x_bits * emission`
/// in bits, so the amount is that product shifted down by 32.
fn amount(x: Fx, emission: u64) -> u64 {
    let bits = x.to_bits();
    if bits < 0 {
        return I96F32::saturating_from_num(x)
            .saturating_mul(I96F32::saturating_from_num(emission))
            .saturating_to_num::<u64>();
    }
    let product = (bits as u128) * u128::from(emission);
    u64::try_from(product >> 32).unwrap_or(u64::MAX)
}

/// Stake after the threshold filter (the owner exempt), normalised in `I64F64` and cast to
/// `I32F32`. In bits that is `floor(s * 2^32 / total)`, computed directly when the total fits
/// (always, for real stakes); otherwise through the library types.
fn normalized_stake(input: &EpochInput, owner: Option<usize>) -> Vec<Fx> {
    let filtered: Vec<u64> = input
        .stake
        .iter()
        .enumerate()
        .map(|(uid, &s)| {
            if owner != Some(uid) && s < input.stake_threshold {
                0
            } else {
                s
            }
        })
        .collect();
    let total: u128 = filtered.iter().map(|&s| u128::from(s)).sum();
    if total < 1 << 62 {
        if total == 0 {
            return vec![ZERO; filtered.len()];
        }
        return filtered
            .iter()
            .map(|&s| Fx::from_bits(((u128::from(s) << 32) / total) as i64))
            .collect();
    }
    // Stakes near the top of I64F64's range saturate there; follow the library exactly.
    let mut stake64: Vec<I64F64> = input
        .stake
        .iter()
        .enumerate()
        .map(|(uid, &s)| {
            let s = I64F64::saturating_from_num(s);
            if owner != Some(uid) && s.saturating_to_num::<u64>() < input.stake_threshold {
                I64F64::from_bits(0)
            } else {
                s
            }
        })
        .collect();
    let total64 = stake64
        .iter()
        .fold(I64F64::from_bits(0), |acc, &s| acc.saturating_add(s));
    if total64 != I64F64::from_bits(0) {
        for s in stake64.iter_mut() {
            *s = div64(*s, total64);
        }
    }
    stake64
        .iter()
        .map(|&s| Fx::saturating_from_num(s))
        .collect()
}

/// Column-wise stake-weighted kappa-median over the validators with positive active stake.
///
/// The reference runs a pivot search per column over every such validator (a missing weight
/// scores 0). The answer of that search does not depend on the pivots it happens to pick: with the
/// column's distinct scores `v_1 < ... < v_m` and `upto(v)` the (exact, fixed-point) stake scoring
/// at most `v`, it returns the first `v_k` with `upto(v_k) > minority`, or `v_m` if there is none,
/// where `minority = stake_sum - kappa`. Stake sums of fixed-point numbers are exact, so sorting
/// the column's non-zero entries and scanning gives the same value in O(nnz log nnz).
fn weighted_median_cols(
    active_stake: &[Fx],
    weights: &Sparse,
    columns: usize,
    kappa: Fx,
) -> Vec<Fx> {
    let mut consensus = vec![ZERO; columns];
    let mut use_stake: Vec<Fx> = active_stake.iter().copied().filter(|&s| s > ZERO).collect();
    if use_stake.is_empty() {
        return consensus;
    }
    normalize(&mut use_stake);
    let voters = use_stake.len();
    let stake_sum = sum(use_stake.iter().copied());
    let minority = stake_sum.saturating_sub(kappa);

    // Gather each column's positive scores (CSC by counting) as sortable keys
    // `score_bits << 16 | voter`: a normalised weight is at most 1 (2^32 in bits), so the key
    // fits in 64 bits, and a voter index is below 65536 because uids are u16.
    let mut counts = vec![0u32; columns + 1];
    let voter_rows = || {
        (0..weights.rows())
            .filter(|&i| active_stake[i] > ZERO)
            .map(|i| {
                let (cols, vals) = weights.row(i);
                cols.iter().copied().zip(vals.iter().copied())
            })
    };
    for row in voter_rows() {
        for (j, w) in row {
            if w > ZERO {
                counts[usize::from(j) + 1] += 1;
            }
        }
    }
    for j in 0..columns {
        counts[j + 1] += counts[j];
    }
    let mut fill = counts.clone();
    let mut keys = vec![0u64; counts[columns] as usize];
    for (voter, row) in voter_rows().enumerate() {
        for (j, w) in row {
            if w > ZERO {
                let slot = &mut fill[usize::from(j)];
                debug_assert!(w <= ONE);
                keys[*slot as usize] = ((w.to_bits() as u64) << 16) | voter as u64;
                *slot += 1;
            }
        }
    }

    for (j, c) in consensus.iter_mut().enumerate() {
        let column = &mut keys[counts[j] as usize..counts[j + 1] as usize];
        if column.is_empty() {
            continue; // Every voter scores 0.
        }
        let mut below = ZERO;
        if voters > column.len() {
            let positive = sum(column.iter().map(|&k| use_stake[(k & 0xffff) as usize]));
            below = stake_sum.saturating_sub(positive);
            if below > minority {
                continue; // The median is 0.
            }
        }
        *c = first_score_above(column, &use_stake, below, minority);
    }
    consensus
}

/// The first distinct score `v` (ascending) whose cumulative stake `below + stake(score <= v)`
/// exceeds `minority`, or the largest score if none does. `column` holds keys
/// `score_bits << 16 | voter` (see [`weighted_median_cols`]), all distinct.
///
/// That score is the score of the first key, in key order, whose prefix stake exceeds
/// `minority`: keys of lower scores never exceed it, and the last key of the answer's score
/// does. Weighted quickselect over keys finds it in expected linear time.
fn first_score_above(column: &mut [u64], stake: &[Fx], mut below: Fx, minority: Fx) -> Fx {
    let score = |k: u64| Fx::from_bits((k >> 16) as i64);
    let stake_of = |k: u64| stake[(k & 0xffff) as usize];
    let Some(&max_key) = column.iter().max() else {
        return ZERO;
    };
    let mut part = column;
    while part.len() > 96 {
        let mid = part.len() / 2;
        part.select_nth_unstable(mid);
        let lower = sum(part[..mid].iter().map(|&k| stake_of(k)));
        if add(below, lower) > minority {
            part = &mut part[..mid];
            continue;
        }
        let upto = add(add(below, lower), stake_of(part[mid]));
        if upto > minority {
            return score(part[mid]);
        }
        below = upto;
        part = &mut part[mid + 1..];
    }
    part.sort_unstable();
    for &k in part.iter() {
        below = add(below, stake_of(k));
        if below > minority {
            return score(k);
        }
    }
    score(max_key)
}

/// `W + ratio * (Wc - W)` per entry, keeping positive results; `Wc` has an entry only where `W`
/// has one (a clipped-away entry counts as 0). Ratios 0 and 1 return `W` and `Wc` exactly.
fn interpolate<'a>(weights: &'a Sparse, clipped: &'a Sparse, ratio: Fx) -> Cow<'a, Sparse> {
    if ratio == ZERO {
        return Cow::Borrowed(weights);
    }
    if ratio == ONE {
        return Cow::Borrowed(clipped);
    }
    let mut out = Sparse::with_capacity(weights.rows(), weights.cols.len());
    for i in 0..weights.rows() {
        let (wc, wv) = weights.row(i);
        let (cc, cv) = clipped.row(i);
        let mut k = 0;
        for (&j, &w) in wc.iter().zip(wv) {
            while k < cc.len() && cc[k] < j {
                k += 1;
            }
            let v2 = if k < cc.len() && cc[k] == j {
                cv[k]
            } else {
                ZERO
            };
            let v = add(w, mul(ratio, v2.saturating_sub(w)));
            if v > ZERO {
                out.push(j, v);
            }
        }
        out.end_row();
    }
    Cow::Owned(out)
}

/// The fixed EMA rate `1 - bonds_moving_average / 1e6`.
fn fixed_alpha(hp: &Hyperparameters) -> Fx {
    let kept = div64(
        I64F64::saturating_from_num(hp.bonds_moving_average),
        I64F64::saturating_from_num(1_000_000u32),
    );
    ONE.saturating_sub(Fx::saturating_from_num(kept))
}

/// `alpha * new + (1 - alpha) * old` over the union of entries, keeping positive results.
fn ema_fixed_alpha(new: &Sparse, old: &Sparse, alpha: Fx, col_sums: &mut [Fx]) -> Sparse {
    let keep = ONE.saturating_sub(alpha);
    let mut out = Sparse::with_capacity(new.rows(), new.cols.len().max(old.cols.len()));
    for i in 0..new.rows() {
        let (nc, nv) = new.row(i);
        let (oc, ov) = old.row(i);
        let (mut a, mut b) = (0, 0);
        while a < nc.len() || b < oc.len() {
            let ja = nc.get(a).map_or(u32::MAX, |&j| u32::from(j));
            let jb = oc.get(b).map_or(u32::MAX, |&j| u32::from(j));
            let j = ja.min(jb);
            let mut cell = ZERO;
            if ja == j {
                cell = add(cell, mul(alpha, nv[a]));
                a += 1;
            }
            if jb == j {
                cell = add(cell, mul(keep, ov[b]));
                b += 1;
            }
            if cell > ZERO {
                // `j` came from a u16 uid, so it fits.
                let j = u16::try_from(j).unwrap_or(u16::MAX);
                let s = &mut col_sums[usize::from(j)];
                *s = add(*s, cell);
                out.push(j, cell);
            }
        }
        out.end_row();
    }
    out
}

/// Liquid alpha: `old` are the stored `u16` bond rows (sorted), `keep[j]` false where bonds to
/// `j` are masked (recently registered). Per entry of the new row, `min(1, (1 - a) * old + max(0, a * new))` with
/// `a = sigmoid_alpha(C[j], new, old)`. Bonds to uids absent from the new row are dropped.
fn ema_liquid_alpha(
    new: &Sparse,
    old: &[Vec<(u16, u16)>],
    keep: &[bool],
    consensus: &[Fx],
    hp: &Hyperparameters,
    col_sums: &mut [Fx],
) -> Sparse {
    let low = u16_proportion(hp.alpha_low);
    let high = u16_proportion(hp.alpha_high);
    let steepness = Fx::saturating_from_num(hp.alpha_sigmoid_steepness);
    let slope = steepness.saturating_div(Fx::from_num(-100));
    let half = Fx::from_bits(1 << 31);
    let mut memo = Memo::new();
    // The liquid alpha as a function of the `exp` argument (slope * (distance - 0.5)).
    let alpha_of = |x: Fx| {
        let sigmoid = recip_of_at_least_one(add(ONE, exp_safe(x)));
        clamp(add(low, mul(sigmoid, high.saturating_sub(low))), low, high)
    };
    let mut out = Sparse::with_capacity(new.rows(), new.cols.len());
    let first = mul(slope, ZERO.saturating_sub(half));
    let mut last = (first, alpha_of(first));
    for (i, orow) in old.iter().enumerate().take(new.rows()) {
        let (nc, nv) = new.row(i);
        let mut k = 0;
        for (&j, &w) in nc.iter().zip(nv) {
            while k < orow.len() && orow[k].0 < j {
                k += 1;
            }
            // A bond to a uid registered since the last epoch is masked out.
            let bond = (k < orow.len() && orow[k].0 == j && keep[usize::from(j)])
                .then(|| u16_proportion(orow[k].1));
            let b = bond.unwrap_or(ZERO);
            let c = consensus[usize::from(j)];
            let diff = if w >= b {
                clamp(w.saturating_sub(c), ZERO, ONE)
            } else {
                clamp(b.saturating_sub(w), ZERO, ONE)
            };
            let x = mul(slope, diff.saturating_sub(half));
            // Runs of equal distances (distance 0 above all) skip even the memo.
            let alpha = if x == last.0 {
                last.1
            } else {
                memo.get(x, alpha_of)
            };
            last = (x, alpha);
            let decayed = match bond {
                Some(b) => mul(ONE.saturating_sub(alpha), b),
                None => ZERO,
            };
            let inc = mul(alpha, w).max(ZERO);
            let v = add(decayed, inc).min(ONE);
            if v > ZERO {
                let s = &mut col_sums[usize::from(j)];
                *s = add(*s, v);
                out.push(j, v);
            }
        }
        out.end_row();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain definition: sort, then scan distinct scores.
    fn by_sorting(column: &[(Fx, Fx)], mut below: Fx, minority: Fx) -> Fx {
        let mut sorted = column.to_vec();
        sorted.sort_by_key(|&(w, _)| w);
        let mut k = 0;
        loop {
            let value = sorted[k].0;
            let mut upto = below;
            while k < sorted.len() && sorted[k].0 == value {
                upto = upto.saturating_add(sorted[k].1);
                k += 1;
            }
            if upto > minority || k == sorted.len() {
                return value;
            }
            below = upto;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]
        #[test]
        fn packed_key_scan_equals_sort_and_scan(
            entries in proptest::collection::vec((1i64..40, 0i64..1000), 1..300),
            below in 0i64..500,
            minority in -100i64..20_000,
        ) {
            // Few distinct scores so that ties are common.
            let column: Vec<(Fx, Fx)> = entries.iter().map(|&(w, s)| (Fx::from_bits(w << 20), Fx::from_bits(s))).collect();
            let (below, minority) = (Fx::from_bits(below), Fx::from_bits(minority));
            prop_assume!(below <= minority || minority < ZERO);
            let stakes: Vec<Fx> = column.iter().map(|&(_, s)| s).collect();
            let mut keys: Vec<u64> = column.iter().enumerate().map(|(v, &(w, _))| ((w.to_bits() as u64) << 16) | v as u64).collect();
            prop_assert_eq!(first_score_above(&mut keys, &stakes, below, minority), by_sorting(&column, below, minority));
        }
    }
}

#[cfg(test)]
mod arithmetic_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]
        #[test]
        fn amounts_match_the_library(bits in 0i64..(1i64 << 34), emission in any::<u64>()) {
            let x = Fx::from_bits(bits);
            let want = I96F32::saturating_from_num(x)
                .saturating_mul(I96F32::saturating_from_num(emission))
                .saturating_to_num::<u64>();
            prop_assert_eq!(amount(x, emission), want);
        }

        #[test]
        fn normalised_stake_matches_the_library(stakes in proptest::collection::vec(any::<u64>(), 1..20), shift in 0u32..64, threshold in any::<u64>()) {
            let stakes: Vec<u64> = stakes.iter().map(|s| s >> shift).collect();
            let n = stakes.len();
            let mut input = crate::synthetic::subnet(crate::synthetic::Shape { n: n as u16, validators: 1, weights_per_row: 1, pool: 1, yuma3: true, liquid_alpha: false }, 1);
            input.stake = stakes;
            input.stake_threshold = threshold >> (shift + 8).min(63);
            let fast = normalized_stake(&input, None);
            let mut slow: Vec<I64F64> = input.stake.iter().map(|&s| {
                let s = I64F64::saturating_from_num(s);
                if s.saturating_to_num::<u64>() < input.stake_threshold { I64F64::from_bits(0) } else { s }
            }).collect();
            let total = slow.iter().fold(I64F64::from_bits(0), |a, &s| a.saturating_add(s));
            if total != I64F64::from_bits(0) {
                for s in slow.iter_mut() { *s = s.checked_div(total).unwrap_or(I64F64::from_bits(0)); }
            }
            let slow: Vec<Fx> = slow.iter().map(|&s| Fx::saturating_from_num(s)).collect();
            prop_assert_eq!(fast, slow);
        }
    }
}
