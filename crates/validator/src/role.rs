//! The subnet validator role: challenge every serving miner, verify and time the answers, keep
//! scores, and set weights with commit and reveal.
//!
//! Two tasks run side by side:
//! - **Evaluation** (not for copiers): a round at a time. Each round draws its challenges from
//!   BLAKE3(latest finalized block hash, validator hotkey, round number), so a miner cannot know
//!   them before that block, and two validators do not send the same prompts. Challenges go
//!   through the validator's own [`Gateway`] to one chosen miner each, sealed, on the same
//!   protocol and paid like any client's request: a miner cannot tell them from client traffic.
//!   Each answer is verified ([`crate::verify`]) by teacher forcing it through the validator's
//!   own copy of the model, and timed from arrival times ([`crate::scoring`]).
//! - **Weights**: whenever a new epoch (`height / tempo`) starts and no commitment is waiting,
//!   commit BLAKE3(netuid, uids, values, salt) of the current weights; in the reveal window
//!   (`commit_reveal_period` tempos after the commit's block) reveal them. With commit-reveal
//!   off (period 0), set them directly once per epoch.
//!
//! A **copier** (for tests of the incentive: a validator that does not evaluate) skips
//! evaluation and, each epoch, commits the stake-weighted mean of the weights the other
//! validators last revealed on chain. Commit-reveal makes what it copies a tempo old, and its
//! bonds trail the honest validators'.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_inference::{ChatMessage, Engine};
use agora_ledger::State;
use agora_primitives::{Address, Call, Hash, NetUid, SubnetParams};
use agora_serve::gateway::{ChatRequest, Completion, Gateway};
use agora_serve::protocol::Message;
use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::challenge::{self, Challenge};
use crate::scoring::{Observation, Scores};
use crate::verify::{self, Answer, ClaimedLogprob, Claims, Failure, Finish, Mode, Verdict};

/// What the validator needs of the chain.
pub trait ChainAccess: Send + Sync {
    /// The latest finalized state and its block's hash.
    fn latest(&self) -> (Arc<State>, Hash);
    /// Sign `call` with the validator's hotkey and hand it to the mempool.
    fn submit(&self, call: Call) -> Result<(), String>;
}

/// The system prompt of every challenge (what a typical client sends).
pub const SYSTEM_PROMPT: &str = "You are a helpful AI assistant.";
/// Temperature of sampled challenges.
pub const SAMPLED_TEMPERATURE: f32 = 0.7;
/// A miner not seen advertising this long after the validator starts counts as failing.
pub const ADVERT_GRACE: Duration = Duration::from_secs(60);

/// Validator settings.
#[derive(Clone, Debug)]
pub struct ValidatorConfig {
    /// The subnet.
    pub netuid: NetUid,
    /// Copy the other validators' revealed weights instead of evaluating (for tests).
    pub copier: bool,
    /// Challenges per miner per round (alternating greedy and sampled).
    pub per_miner: usize,
    /// Tokens asked for per challenge.
    pub tokens: std::ops::RangeInclusive<u32>,
    /// Pause between rounds.
    pub pause: Duration,
    /// Challenges in flight at once (each to a different miner when there are enough).
    pub parallel: usize,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        Self {
            netuid: 1,
            copier: false,
            per_miner: 2,
            tokens: 32..=64,
            pause: Duration::from_secs(30),
            parallel: 1,
        }
    }
}

/// The result of one challenge, for logs and tests.
#[derive(Clone, Debug)]
pub struct ChallengeResult {
    /// The miner.
    pub miner: Address,
    /// What was measured.
    pub observation: Observation,
    /// Pass, or why not.
    pub verdict: Verdict,
}

/// A running subnet validator.
pub struct Validator {
    hotkey: Address,
    engine: Arc<dyn Engine>,
    gateway: Arc<Gateway>,
    chain: Arc<dyn ChainAccess>,
    config: ValidatorConfig,
    scores: Mutex<Scores>,
    rounds: AtomicU64,
    started: Instant,
    /// Why it last abstained (see [`abstention`]), to log each change once.
    abstaining: Mutex<Option<String>>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("hotkey", &self.hotkey)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A commitment waiting for its reveal.
#[derive(Clone, Debug)]
struct Pending {
    hash: Hash,
    uids: Vec<u16>,
    values: Vec<u16>,
    salt: [u8; 32],
}

#[derive(Debug, Default)]
struct WeightState {
    pending: Option<Pending>,
    last_commit_epoch: Option<u64>,
    last_set_epoch: Option<u64>,
    quiet_until: u64,
}

impl Validator {
    /// A validator with its hotkey (which signs its weights), its copy of the registered model,
    /// the gateway its challenges go through (paying from its own escrow) and the chain.
    pub fn new(
        hotkey: Address,
        engine: Arc<dyn Engine>,
        gateway: Arc<Gateway>,
        chain: Arc<dyn ChainAccess>,
        config: ValidatorConfig,
    ) -> Arc<Self> {
        if !config.copier {
            // Off the caller's thread (a node calls this from an async task, and the screen
            // takes a while to build): a check that comes first waits for it.
            let engine = engine.clone();
            let _ = std::thread::Builder::new()
                .name("prepare-scoring".into())
                .spawn(move || engine.prepare_scoring());
        }
        Arc::new(Self {
            hotkey,
            engine,
            gateway,
            chain,
            config,
            scores: Mutex::new(Scores::default()),
            rounds: AtomicU64::new(0),
            started: Instant::now(),
            abstaining: Mutex::new(None),
        })
    }

    /// Whether this validator must not score the subnet now ([`abstention`]); logs when that
    /// changes. A copier never evaluates, so it never abstains.
    fn abstains(&self, state: &State) -> bool {
        if self.config.copier {
            return false;
        }
        let why = state
            .subnets
            .get(&self.config.netuid)
            .and_then(|s| abstention(self.config.netuid, &s.params, self.engine.as_ref()));
        let mut last = match self.abstaining.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if *last != why {
            match &why {
                Some(reason) => warn!(validator = %self.hotkey, "not scoring: {reason}"),
                None => {
                    info!(validator = %self.hotkey, "the engine matches the subnet's registered model and numerics: scoring")
                }
            }
            last.clone_from(&why);
        }
        why.is_some()
    }

    /// The hotkey.
    pub fn hotkey(&self) -> Address {
        self.hotkey
    }

    /// Whether it copies instead of evaluating.
    pub fn is_copier(&self) -> bool {
        self.config.copier
    }

    /// Rounds of challenges finished.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// A copy of the scores.
    pub fn scores(&self) -> Scores {
        match self.scores.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Start the evaluation loop (unless a copier) and the weight loop.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if !self.config.copier {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let evaluated = me.evaluate_round().await;
                    let pause = if evaluated {
                        me.config.pause.max(Duration::from_millis(200))
                    } else {
                        Duration::from_secs(1)
                    };
                    tokio::time::sleep(pause).await;
                }
            }));
        }
        let me = self.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = WeightState::default();
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                me.weights_tick(&mut w);
            }
        }));
        tasks
    }

    /// Serving miners of the subnet, `(uid, hotkey, registered model hash)`, not counting
    /// this validator.
    fn serving_miners(&self, state: &State) -> Vec<(u16, Address, Hash)> {
        state
            .subnets
            .get(&self.config.netuid)
            .map(|s| {
                s.neurons
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.hotkey != self.hotkey)
                    .filter_map(|(uid, n)| {
                        n.serve
                            .as_ref()
                            .map(|info| (uid as u16, n.hotkey, info.model_hash))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One round over every serving miner; false when there was nobody to challenge.
    pub async fn evaluate_round(&self) -> bool {
        let (state, tip) = self.chain.latest();
        self.gateway.set_height(state.height);
        if self.abstains(&state) {
            return false;
        }
        let params = state
            .subnets
            .get(&self.config.netuid)
            .map_or_else(SubnetParams::defaults, |s| s.params.clone());
        let miners = self.serving_miners(&state);
        if miners.is_empty() {
            return false;
        }
        let round = self.rounds.load(Ordering::Relaxed);
        let mut seed_input = tip.0.to_vec();
        seed_input.extend_from_slice(&self.hotkey.0);
        seed_input.extend_from_slice(&round.to_le_bytes());
        let seed = agora_crypto::hash(&seed_input);
        let challenges = challenge::round(
            &seed,
            miners.len(),
            self.config.per_miner,
            self.config.tokens.clone(),
        );
        let grace_over = self.started.elapsed() > ADVERT_GRACE;
        let mut observed: Vec<(Address, Observation)> = Vec::new();
        // Challenge j of every miner, then j + 1: consecutive requests go to different miners.
        let mut jobs = Vec::new();
        for j in 0..self.config.per_miner {
            for ((_, hotkey, model), cs) in miners.iter().zip(&challenges) {
                if !self.gateway.knows(hotkey) && !grace_over {
                    // Its advert has not reached us yet; do not judge it on our start-up.
                    continue;
                }
                if let Some(c) = cs.get(j) {
                    if !params.admits_model(model) {
                        // It registered another model than the subnet's: whatever it answers is
                        // not the subnet's work, so each challenge it would get fails unsent.
                        if j == 0 {
                            info!(validator = %self.hotkey, miner = %hotkey, registered = %model, subnet = %params.model_hash, "miner registered another model than the subnet's");
                        }
                        observed.push((*hotkey, Observation::failed()));
                        continue;
                    }
                    jobs.push((*hotkey, c.clone(), *model));
                }
            }
        }
        // Measure first, verify after: every answer of the round is received (and timed) before
        // any is teacher-forced, so this validator's own verification passes never slow down
        // the miners it is timing.
        let answers: Vec<(Address, Challenge, Hash, Result<Completion, String>)> =
            futures::stream::iter(jobs)
                .map(|(hotkey, c, model)| async move {
                    let request = Self::request(&c);
                    let answer = self
                        .gateway
                        .complete_with(&hotkey, &request)
                        .await
                        .map_err(|e| e.to_string());
                    (hotkey, c, model, answer)
                })
                .buffer_unordered(self.config.parallel.max(1))
                .collect()
                .await;
        for (hotkey, c, model, answer) in answers {
            let result = self.judge(hotkey, &c, model, answer).await;
            match &result.verdict {
                Verdict::Pass => {
                    debug!(validator = %self.hotkey, miner = %hotkey, "challenge passed")
                }
                Verdict::Fail(f) => {
                    info!(validator = %self.hotkey, miner = %hotkey, failure = ?f, "challenge failed")
                }
            }
            observed.push((result.miner, result.observation));
        }
        if observed.is_empty() {
            return false;
        }
        let summary = match self.scores.lock() {
            Ok(mut s) => {
                s.record_round(&observed);
                s.summary()
            }
            Err(p) => {
                let mut s = p.into_inner();
                s.record_round(&observed);
                s.summary()
            }
        };
        info!(validator = %self.hotkey, round, %summary, "round done");
        self.rounds.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The request a challenge sends: the validator's system message and the prompt.
    fn request(c: &Challenge) -> ChatRequest {
        ChatRequest {
            messages: vec![
                Message {
                    role: "system".into(),
                    content: SYSTEM_PROMPT.into(),
                },
                Message {
                    role: "user".into(),
                    content: c.prompt.clone(),
                },
            ],
            max_tokens: c.max_tokens,
            temperature: if c.sampled_seed.is_some() {
                SAMPLED_TEMPERATURE
            } else {
                0.0
            },
            top_p: 1.0,
            seed: c.sampled_seed.unwrap_or(0),
            stop: Vec::new(),
            max_price_per_1k: None,
            logprobs: c.logprobs,
        }
    }

    /// Send one challenge to `miner`, then verify and time the answer.
    pub async fn challenge(
        &self,
        miner: Address,
        c: &Challenge,
        registered_model: Hash,
    ) -> ChallengeResult {
        let answer = self
            .gateway
            .complete_with(&miner, &Self::request(c))
            .await
            .map_err(|e| e.to_string());
        self.judge(miner, c, registered_model, answer).await
    }

    /// Verify and time one received answer (or its absence).
    async fn judge(
        &self,
        miner: Address,
        c: &Challenge,
        registered_model: Hash,
        answer: Result<Completion, String>,
    ) -> ChallengeResult {
        let failed = |verdict| ChallengeResult {
            miner,
            observation: Observation::failed(),
            verdict,
        };
        let completion = match answer {
            Ok(c) => c,
            Err(e) => return failed(Verdict::Fail(Failure::NoAnswer(e))),
        };
        let engine = self.engine.clone();
        let challenge = c.clone();
        let checked = tokio::task::spawn_blocking(move || {
            check_completion(engine.as_ref(), &challenge, &completion, registered_model)
                .map(|v| (v, completion))
        })
        .await;
        match checked {
            Ok(Ok((verdict, completion))) => {
                let observation = Observation {
                    passed: verdict == Verdict::Pass,
                    ttft: completion.arrivals.first().copied().unwrap_or_default(),
                    total: completion.arrivals.last().copied().unwrap_or_default(),
                    tokens: completion.tokens.len(),
                };
                ChallengeResult {
                    miner,
                    observation,
                    verdict,
                }
            }
            Ok(Err(e)) => {
                // The answer could not even be scored (for example, unknown token ids).
                failed(Verdict::Fail(Failure::NoAnswer(format!("unscorable: {e}"))))
            }
            Err(e) => failed(Verdict::Fail(Failure::NoAnswer(e.to_string()))),
        }
    }

    /// The weights to commit now: the scores, or for a copier the others' revealed weights.
    fn weights_now(&self, state: &State) -> Option<(Vec<u16>, Vec<u16>)> {
        if self.config.copier {
            return copy_revealed(state, self.config.netuid, &self.hotkey);
        }
        if self.abstains(state) {
            // Scores taken with another model or numerics than the subnet's say nothing of
            // its miners now: no new weights until the engine matches.
            return None;
        }
        let uids: Vec<(u16, Address)> = self
            .serving_miners(state)
            .into_iter()
            .map(|(uid, hotkey, _)| (uid, hotkey))
            .collect();
        self.scores().weights(&uids)
    }

    fn submit(&self, call: Call, what: &str) -> bool {
        match self.chain.submit(call) {
            Ok(()) => true,
            Err(e) => {
                warn!(validator = %self.hotkey, %e, "{what} refused");
                false
            }
        }
    }

    fn weights_tick(&self, w: &mut WeightState) {
        let (state, _) = self.chain.latest();
        let netuid = self.config.netuid;
        let Some(subnet) = state.subnets.get(&netuid) else {
            return;
        };
        let Some(me) = subnet.neurons.iter().find(|n| n.hotkey == self.hotkey) else {
            return;
        };
        let height = state.height;
        if height < w.quiet_until {
            return;
        }
        let tempo = u64::from(subnet.params.tempo.max(1));
        let period = u64::from(subnet.params.commit_reveal_period);
        let epoch = height / tempo;
        if period == 0 {
            if w.last_set_epoch != Some(epoch)
                && let Some((uids, values)) = self.weights_now(&state)
            {
                let call = Call::RevealWeights {
                    netuid,
                    uids,
                    values,
                    salt: [0; 32],
                };
                if self.submit(call, "setting weights") {
                    w.last_set_epoch = Some(epoch);
                }
                w.quiet_until = height + 2;
            }
            return;
        }
        if let Some(p) = &w.pending {
            match &me.commit {
                Some(c) if c.hash == p.hash => {
                    let opens = c.block / tempo + period;
                    if epoch < opens {
                        return;
                    }
                    if epoch == opens {
                        let call = Call::RevealWeights {
                            netuid,
                            uids: p.uids.clone(),
                            values: p.values.clone(),
                            salt: p.salt,
                        };
                        self.submit(call, "revealing weights");
                        w.quiet_until = height + 3;
                        return;
                    }
                    // The window passed: commit afresh.
                    w.pending = None;
                }
                // Revealed (the commitment is cleared) or replaced.
                _ => w.pending = None,
            }
        }
        if w.last_commit_epoch == Some(epoch) {
            return;
        }
        let Some((uids, values)) = self.weights_now(&state) else {
            return;
        };
        let mut salt = [0u8; 32];
        if getrandom::getrandom(&mut salt).is_err() {
            // A guessable salt would leak the weights before the reveal; skip this epoch.
            warn!("no randomness for a weights salt");
            return;
        }
        let hash = agora_crypto::weights_commit(netuid, &uids, &values, &salt);
        info!(validator = %self.hotkey, epoch, ?uids, ?values, "committing weights");
        if self.submit(
            Call::CommitWeights {
                netuid,
                commit: hash,
            },
            "committing weights",
        ) {
            w.pending = Some(Pending {
                hash,
                uids,
                values,
                salt,
            });
            w.last_commit_epoch = Some(epoch);
        }
        w.quiet_until = height + 2;
    }
}

/// The stake-weighted mean of the weights the other validators of `netuid` last revealed,
/// scaled so the largest is 65535 (what a copier commits).
pub fn copy_revealed(state: &State, netuid: NetUid, me: &Address) -> Option<(Vec<u16>, Vec<u16>)> {
    let subnet = state.subnets.get(&netuid)?;
    let mut sums = vec![0u128; subnet.neurons.len()];
    for n in subnet.neurons.iter().filter(|n| n.hotkey != *me) {
        let stake = state.hotkey_stake(&n.hotkey).0;
        for &(uid, v) in &n.weights {
            if let Some(s) = sums.get_mut(usize::from(uid)) {
                *s = s.saturating_add(stake.saturating_mul(u128::from(v)));
            }
        }
    }
    let best = sums.iter().copied().max().unwrap_or(0);
    if best == 0 {
        return None;
    }
    let (uids, values): (Vec<u16>, Vec<u16>) = sums
        .iter()
        .enumerate()
        .map(|(uid, s)| (uid as u16, (s.saturating_mul(65535) / best) as u16))
        .filter(|(_, v)| *v > 0)
        .unzip();
    Some((uids, values))
}

/// The prompt tokens of a challenge whose user message is `user`: the model's chat template
/// with [`SYSTEM_PROMPT`], tokenized (what the miner renders too).
pub fn prompt_tokens(engine: &dyn Engine, user: &str) -> Result<Vec<u32>, agora_inference::Error> {
    let rendered = engine.render_chat(&[
        ChatMessage {
            role: "system".into(),
            content: SYSTEM_PROMPT.into(),
        },
        ChatMessage::user(user),
    ])?;
    engine.tokenize(&rendered)
}

/// Why a validator running `engine` must not score subnet `netuid` with these hyperparameters,
/// and why a miner running it would fail there (`None`: neither). A subnet that registers a
/// model file (its BLAKE3) or an engine numerics version is scored only by validators whose
/// engine runs that file with those numerics: a greedy answer is checked token by token
/// against the validator's own logits, and only engines of the same numerics on the same file
/// compute the same ones. A validator that has
/// not upgraded (or runs another file) would otherwise fail every honest miner; it abstains
/// instead, sets no weights, and says what to run.
pub fn abstention(netuid: NetUid, params: &SubnetParams, engine: &dyn Engine) -> Option<String> {
    let own = agora_serve::miner::model_hash(engine);
    if !params.admits_model(&own) {
        return Some(format!(
            "subnet {netuid} registers the model file {} but this node's engine runs {own}: run the registered model (`agora model fetch` fetches subnet 1's)",
            params.model_hash
        ));
    }
    let numerics = engine.info().numerics;
    if !params.admits_numerics(numerics) {
        return Some(format!(
            "subnet {netuid} registers engine numerics {} but this node's engine computes numerics {numerics}: run an agora release whose engine has numerics {}",
            params.numerics, params.numerics
        ));
    }
    None
}

/// Judge a completion of `c` against the validator's model: a receipt for the registered
/// model, an engine computing the validator's numerics (when the miner's advert says which),
/// text that is the text of the ids, and the teacher-forcing rules of [`verify`].
pub fn check_completion(
    engine: &dyn Engine,
    c: &Challenge,
    completion: &Completion,
    registered_model: Hash,
) -> Result<Verdict, agora_inference::Error> {
    let fail = |f| Ok(Verdict::Fail(f));
    let Some(receipt) = &completion.receipt else {
        return fail(Failure::NoReceipt);
    };
    if receipt.model_hash != registered_model {
        return fail(Failure::WrongModelHash);
    }
    let own = engine.info().numerics;
    if completion.numerics != 0 && own != 0 && completion.numerics != own {
        return fail(Failure::EngineNumerics {
            miner: completion.numerics,
            validator: own,
        });
    }
    let vocab = engine.info().vocab_size;
    if completion.tokens.iter().any(|&t| t as usize >= vocab) {
        return fail(Failure::TextMismatch);
    }
    // The text of the ids as generation streams it (complete characters; see
    // `agora_inference::complete_text`): an answer that ends inside a character leaves it out.
    let mut bytes = Vec::new();
    for &t in &completion.tokens {
        bytes.extend(engine.token_bytes(t)?);
    }
    if agora_inference::complete_text(&bytes).0 != completion.text {
        return fail(Failure::TextMismatch);
    }
    let prompt = prompt_tokens(engine, &c.prompt)?;
    let claims: Option<Vec<ClaimedLogprob>> = completion.logprobs.as_ref().map(|l| {
        l.iter()
            .map(|t| ClaimedLogprob {
                logprob: t.logprob,
                top: t.top.iter().map(|a| (a.id, a.logprob)).collect(),
            })
            .collect()
    });
    let answer = Answer {
        prompt: &prompt,
        tokens: &completion.tokens,
        mode: if c.sampled_seed.is_some() {
            Mode::Sampled
        } else {
            Mode::Greedy
        },
        finish: if completion.finish_reason == "length" {
            Finish::Length
        } else {
            Finish::Stop
        },
        max_tokens: c.max_tokens as usize,
        claimed_tokens: receipt.completion_tokens as usize,
        logprobs: claims.as_deref().map(|tokens| Claims {
            alternatives: usize::from(c.logprobs.unwrap_or(0)),
            tokens,
        }),
    };
    verify::verify(engine, &answer, engine.info().eos_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_inference::{GenerateRequest, TinyEngine};
    use agora_primitives::Amount;

    #[test]
    fn a_validator_abstains_unless_its_engine_is_the_subnets_registered_model_and_numerics() {
        let engine = TinyEngine::new();
        let own = agora_serve::miner::model_hash(&engine);
        let numerics = engine.info().numerics;
        // Nothing registered, or exactly this engine: it scores.
        assert_eq!(abstention(1, &SubnetParams::defaults(), &engine), None);
        let registered = SubnetParams {
            model_hash: own,
            numerics,
            ..SubnetParams::defaults()
        };
        assert_eq!(abstention(1, &registered, &engine), None);
        // Another file: named, with both hashes and what to run.
        let other_model = SubnetParams {
            model_hash: Hash([9; 32]),
            ..registered.clone()
        };
        let why = abstention(1, &other_model, &engine).expect("another model abstains");
        assert!(why.contains(&Hash([9; 32]).to_string()), "{why}");
        assert!(why.contains(&own.to_string()), "{why}");
        assert!(why.contains("agora model fetch"), "{why}");
        // Other numerics (an upgrade this validator has not taken): named, with both versions.
        let upgraded = SubnetParams {
            numerics: numerics + 1,
            ..registered
        };
        let why = abstention(1, &upgraded, &engine).expect("other numerics abstain");
        assert!(
            why.contains(&format!("registers engine numerics {}", numerics + 1)),
            "{why}"
        );
        assert!(
            why.contains(&format!("computes numerics {numerics}")),
            "{why}"
        );
    }

    /// The tiny engine's greedy answer to `c`, as a miner advertising `numerics` sends it.
    fn answered(engine: &TinyEngine, c: &Challenge, model: Hash, numerics: u32) -> Completion {
        let prompt = prompt_tokens(engine, &c.prompt).unwrap();
        let mut request = GenerateRequest::greedy(prompt.clone(), c.max_tokens as usize);
        request.logprobs = c.logprobs.is_some();
        request.top_logprobs = usize::from(c.logprobs.unwrap_or(0));
        let out = engine.generate(&request, &mut |_| true).unwrap();
        // As the miner sends them and the gateway hands them over.
        let logprobs = c.logprobs.map(|_| {
            out.tokens
                .iter()
                .map(|t| agora_serve::protocol::TokenLogprobs {
                    bytes: engine.token_bytes(t.id).unwrap(),
                    logprob: t.logprob.unwrap(),
                    top: t
                        .top
                        .iter()
                        .map(|&(id, logprob)| agora_serve::protocol::Alternative {
                            id,
                            bytes: engine.token_bytes(id).unwrap(),
                            logprob,
                        })
                        .collect(),
                })
                .collect()
        });
        let tokens: Vec<u32> = out.tokens.iter().map(|t| t.id).collect();
        // As the miner streams it and the gateway collects it.
        let text = out.text.clone();
        let finish_reason = match out.finish {
            agora_inference::FinishReason::Length => "length",
            _ => "stop",
        };
        let receipt = agora_primitives::Receipt {
            netuid: 1,
            miner: Address([1; 32]),
            gateway: Address([2; 32]),
            request_hash: Hash([3; 32]),
            response_hash: agora_crypto::hash(text.as_bytes()),
            model_hash: model,
            prompt_tokens: prompt.len() as u32,
            completion_tokens: tokens.len() as u32,
            price_per_1k_tokens: Amount(1),
            nonce: 7,
            expiry_height: 100,
        };
        Completion {
            text,
            finish_reason: finish_reason.into(),
            prompt_tokens: prompt.len() as u32,
            completion_tokens: tokens.len() as u32,
            miner: receipt.miner,
            receipt: Some(receipt),
            tokens,
            arrivals: Vec::new(),
            numerics,
            logprobs,
        }
    }

    /// An answer whose last token holds only the first bytes of a character: the miner
    /// streams its text without that character, and that is the text the check expects. (It
    /// used to expect the text of the ids with U+FFFD there, and failed such honest answers as
    /// `TextMismatch`.)
    #[test]
    fn an_answer_ending_inside_a_character_passes_the_text_check() {
        let engine = TinyEngine::new();
        let model = Hash([9; 32]);
        let own = engine.info().numerics;
        // The tiny engine's tokens are bytes: find an answer length that stops inside one.
        let (c, done) = (1..64u32)
            .find_map(|max_tokens| {
                let c = Challenge {
                    prompt: "Name a colour.".into(),
                    max_tokens,
                    sampled_seed: None,
                    logprobs: None,
                };
                let done = answered(&engine, &c, model, own);
                let mut bytes = Vec::new();
                for &t in &done.tokens {
                    bytes.extend(engine.token_bytes(t).unwrap());
                }
                let (_, used) = agora_inference::complete_text(&bytes);
                (used < bytes.len()).then_some((c, done))
            })
            .expect("an answer that ends inside a character");
        let whole = engine.detokenize(&done.tokens).unwrap();
        assert!(whole.ends_with('\u{fffd}') && whole.starts_with(&done.text));
        assert_eq!(
            check_completion(&engine, &c, &done, model).unwrap(),
            Verdict::Pass
        );
        // The ids' text with the unfinished character is not what a miner streams.
        let padded = Completion {
            text: whole,
            ..done
        };
        assert_eq!(
            check_completion(&engine, &c, &padded, model).unwrap(),
            Verdict::Fail(Failure::TextMismatch)
        );
    }

    #[test]
    fn a_miner_on_other_numerics_is_named_and_not_teacher_forced() {
        let engine = TinyEngine::new();
        let own = engine.info().numerics;
        assert_ne!(own, 0, "the tiny engine states its numerics");
        let model = Hash([9; 32]);
        let c = Challenge {
            prompt: "Name a colour.".into(),
            max_tokens: 6,
            sampled_seed: None,
            logprobs: None,
        };
        // The same answer passes from a miner on the validator's numerics, or one that does
        // not say (an advert from before the field)...
        for numerics in [own, 0] {
            let done = answered(&engine, &c, model, numerics);
            assert!(!done.tokens.is_empty());
            let verdict = check_completion(&engine, &c, &done, model).unwrap();
            assert_eq!(verdict, Verdict::Pass, "numerics {numerics}");
        }
        // ...and fails, naming both versions, from a miner that advertises other numerics.
        let done = answered(&engine, &c, model, own + 1);
        let verdict = check_completion(&engine, &c, &done, model).unwrap();
        assert_eq!(
            verdict,
            Verdict::Fail(Failure::EngineNumerics {
                miner: own + 1,
                validator: own
            })
        );
        // A receipt for another model still fails as that first.
        let verdict = check_completion(&engine, &c, &done, Hash([8; 32])).unwrap();
        assert_eq!(verdict, Verdict::Fail(Failure::WrongModelHash));
    }

    #[test]
    fn claimed_log_probabilities_are_checked_against_the_validators_own() {
        let engine = TinyEngine::new();
        let model = Hash([9; 32]);
        let own = engine.info().numerics;
        for alternatives in [0, 2] {
            let c = Challenge {
                prompt: "Name a colour.".into(),
                max_tokens: 6,
                sampled_seed: None,
                logprobs: Some(alternatives),
            };
            let honest = answered(&engine, &c, model, own);
            let claims = honest.logprobs.as_ref().unwrap();
            assert_eq!(claims.len(), honest.tokens.len());
            assert!(
                claims
                    .iter()
                    .all(|t| t.top.len() == usize::from(alternatives))
            );
            let verdict = check_completion(&engine, &c, &honest, model).unwrap();
            assert_eq!(verdict, Verdict::Pass, "{alternatives} alternatives");
            // A made-up number for one token's log-probability...
            let mut lying = honest.clone();
            lying.logprobs.as_mut().unwrap()[3].logprob = 0.0;
            let verdict = check_completion(&engine, &c, &lying, model).unwrap();
            assert!(
                matches!(
                    verdict,
                    Verdict::Fail(Failure::WrongLogprob { position: 3, .. })
                ),
                "{verdict:?}"
            );
            // ...or claims that do not cover the answer fail.
            let mut short = honest.clone();
            short.logprobs.as_mut().unwrap().pop();
            let verdict = check_completion(&engine, &c, &short, model).unwrap();
            assert!(
                matches!(verdict, Verdict::Fail(Failure::WrongLogprob { .. })),
                "{verdict:?}"
            );
            if alternatives > 0 {
                // So do a wrong alternative's number, another token in its place, and fewer
                // alternatives than asked.
                let mut number = honest.clone();
                number.logprobs.as_mut().unwrap()[1].top[1].logprob = -0.5;
                let mut token = honest.clone();
                token.logprobs.as_mut().unwrap()[2].top[1].id += 1;
                let mut fewer = honest.clone();
                fewer.logprobs.as_mut().unwrap()[4].top.pop();
                for (forged, at) in [(number, 1), (token, 2), (fewer, 4)] {
                    let verdict = check_completion(&engine, &c, &forged, model).unwrap();
                    assert!(
                        matches!(
                            verdict,
                            Verdict::Fail(Failure::WrongLogprob { position, .. }) if position == at
                        ),
                        "{verdict:?}"
                    );
                }
            }
        }
    }
}
