//! Inputs and outputs of one epoch, and the typed error for malformed inputs.

/// Subnet hyperparameters the epoch reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hyperparameters {
    /// Consensus majority as a `u16` proportion (32767 is about 0.5).
    pub kappa: u16,
    /// How much bonds follow clipped rather than raw weights, as a `u16` proportion.
    pub bonds_penalty: u16,
    /// Bond moving-average memory in parts per million (900000 keeps 90% of the old bond).
    pub bonds_moving_average: u64,
    /// Yuma 3 bonds (absolute, not normalised) instead of Yuma 2.
    pub yuma3: bool,
    /// Per-cell bond EMA rate from a sigmoid of the distance to consensus (Yuma 3 only).
    pub liquid_alpha: bool,
    /// Lowest liquid alpha, as a `u16` proportion.
    pub alpha_low: u16,
    /// Highest liquid alpha, as a `u16` proportion.
    pub alpha_high: u16,
    /// Steepness of the liquid-alpha sigmoid (divided by -100 inside).
    pub alpha_sigmoid_steepness: i16,
    /// How many uids may hold a validator permit.
    pub max_allowed_validators: u16,
}

/// The state of one subnet just before its epoch.
///
/// Every per-uid vector has exactly `n` entries. Weight and bond rows are sparse: `(uid, value)`
/// pairs with uids strictly increasing and below `n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochInput {
    /// Number of uids.
    pub n: u16,
    /// The block at which the epoch runs.
    pub current_block: u64,
    /// Blocks between epochs.
    pub tempo: u64,
    /// Block of the last epoch; 0 means `current_block - tempo`.
    pub last_mechanism_step_block: u64,
    /// A uid is active if it set weights within this many blocks.
    pub activity_cutoff: u64,
    /// Stake below this counts as 0 (except the owner's).
    pub stake_threshold: u64,
    /// The subnet owner's uid, if the owner is registered.
    pub owner_uid: Option<u16>,
    /// Stake per uid, in base units.
    pub stake: Vec<u64>,
    /// Validator permits from the previous epoch.
    pub validator_permits: Vec<bool>,
    /// Block at which each uid last set weights.
    pub last_update: Vec<u64>,
    /// Block at which each uid was (most recently) registered.
    pub block_at_registration: Vec<u64>,
    /// Stored weights, each non-empty row max-upscaled to 65535.
    pub weights: Vec<Vec<(u16, u16)>>,
    /// Stored bonds.
    pub bonds: Vec<Vec<(u16, u16)>>,
    /// Base units this epoch distributes.
    pub emission: u64,
    /// Hyperparameters of the subnet.
    pub hyperparameters: Hyperparameters,
}

/// What one epoch decides, per uid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochOutput {
    /// Set weights within the activity cutoff.
    pub active: Vec<bool>,
    /// Normalised stake as a `u16` proportion.
    pub stake_weight: Vec<u16>,
    /// New validator permits.
    pub validator_permits: Vec<bool>,
    /// Stake-weighted kappa-median of the weights on each uid.
    pub consensus: Vec<u16>,
    /// Miner's share of the consensus-clipped ranks.
    pub incentive: Vec<u16>,
    /// Validator's share of bond returns.
    pub dividends: Vec<u16>,
    /// Sum of each validator's consensus-clipped weights.
    pub validator_trust: Vec<u16>,
    /// Bonds to persist (empty rows for uids without a new permit).
    pub bonds: Vec<Vec<(u16, u16)>>,
    /// Base units paid to each uid as a miner.
    pub server_emission: Vec<u64>,
    /// Base units paid to each uid as a validator.
    pub validator_emission: Vec<u64>,
    /// Normalised incentive plus dividends, in base units.
    pub combined_emission: Vec<u64>,
}

/// Why an epoch input was refused. `path` names the offending field of the input object in
/// JSON-path style (`weights[3][1]`), so the message points at the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A per-uid vector or the row list does not have `n` entries.
    #[error("{path}: has {len} entries but n is {n}; give exactly one entry per uid")]
    WrongLength {
        /// Offending field.
        path: String,
        /// Entries found.
        len: usize,
        /// Entries expected.
        n: u16,
    },
    /// A row names a uid that does not exist.
    #[error("{path}: uid {uid} is out of range; uids are 0..{n}")]
    UidOutOfRange {
        /// Offending entry.
        path: String,
        /// The uid.
        uid: u16,
        /// Number of uids.
        n: u16,
    },
    /// A row has more entries than there are uids.
    #[error("{path}: row has {len} entries but n is {n}")]
    RowTooLong {
        /// Offending row.
        path: String,
        /// Entries found.
        len: usize,
        /// Number of uids.
        n: u16,
    },
    /// A row names the same uid twice.
    #[error("{path}: uid {uid} appears twice in this row; each uid at most once")]
    DuplicateUid {
        /// Offending entry.
        path: String,
        /// The uid.
        uid: u16,
    },
}

impl EpochInput {
    /// Check the shape of the input: vector lengths, row lengths and uid ranges. Rows whose uids
    /// are not in increasing order are accepted and sorted by [`crate::epoch`].
    pub fn validate(&self) -> Result<(), InputError> {
        self.check().map(|_| ())
    }

    /// [`EpochInput::validate`], also telling whether every weight and bond row is already in
    /// increasing uid order (then the epoch need not check or sort rows again).
    pub(crate) fn check(&self) -> Result<bool, InputError> {
        let mut all_sorted = true;
        let n = self.n;
        let want = usize::from(n);
        let lens = [
            ("stake", self.stake.len()),
            ("validator_permits", self.validator_permits.len()),
            ("last_update", self.last_update.len()),
            ("block_at_registration", self.block_at_registration.len()),
            ("weights", self.weights.len()),
            ("bonds", self.bonds.len()),
        ];
        for (path, len) in lens {
            if len != want {
                return Err(InputError::WrongLength {
                    path: path.into(),
                    len,
                    n,
                });
            }
        }
        if let Some(owner) = self.owner_uid
            && owner >= n
        {
            return Err(InputError::UidOutOfRange {
                path: "owner_uid".into(),
                uid: owner,
                n,
            });
        }
        for (name, matrix) in [("weights", &self.weights), ("bonds", &self.bonds)] {
            for (i, row) in matrix.iter().enumerate() {
                if row.len() > want {
                    return Err(InputError::RowTooLong {
                        path: format!("{name}[{i}]"),
                        len: row.len(),
                        n,
                    });
                }
                // One pass: every uid in range, and whether the row is strictly increasing.
                let mut increasing = true;
                let mut previous: Option<u16> = None;
                for (k, &(uid, _)) in row.iter().enumerate() {
                    if uid >= n {
                        return Err(InputError::UidOutOfRange {
                            path: format!("{name}[{i}][{k}][0]"),
                            uid,
                            n,
                        });
                    }
                    increasing &= previous.is_none_or(|p| p < uid);
                    previous = Some(uid);
                }
                all_sorted &= increasing;
                if !increasing {
                    let mut uids: Vec<(u16, usize)> = row
                        .iter()
                        .enumerate()
                        .map(|(k, &(uid, _))| (uid, k))
                        .collect();
                    uids.sort_unstable();
                    if let Some(w) = uids.windows(2).find(|w| w[0].0 == w[1].0) {
                        return Err(InputError::DuplicateUid {
                            path: format!("{name}[{i}][{}][0]", w[0].1.max(w[1].1)),
                            uid: w[0].0,
                        });
                    }
                }
            }
        }
        Ok(all_sorted)
    }
}
