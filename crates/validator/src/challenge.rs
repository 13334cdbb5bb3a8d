//! Challenge prompts from a seed: every validator that sees the same finalized block hash draws
//! the same challenges, and a miner cannot know them before that block exists.

use agora_primitives::Hash;

const TEMPLATES: [&str; 12] = [
    "Explain {topic} in {n} sentences.",
    "What is the most important fact about {topic}?",
    "Write a poem of {n} lines about {topic}.",
    "Give {n} bullet points about {topic}.",
    "List {n} facts about {topic}.",
    "Describe {topic} in at most {n}0 words.",
    "How would you teach {topic} to a child?",
    "What is a common misconception about {topic}?",
    "Summarise the history of {topic} in one paragraph.",
    "List two advantages and two drawbacks of {topic}.",
    "Write a question a student might ask about {topic}, then answer it.",
    "Describe {topic} to someone who has never heard of it.",
];

const TOPICS: [&str; 24] = [
    "photosynthesis",
    "the French Revolution",
    "prime numbers",
    "black holes",
    "the water cycle",
    "supply and demand",
    "the human heart",
    "volcanoes",
    "the printing press",
    "machine learning",
    "the Roman Empire",
    "plate tectonics",
    "vaccines",
    "the internet",
    "honeybees",
    "climate",
    "the Pythagorean theorem",
    "electric cars",
    "the Moon",
    "DNA",
    "jazz",
    "the Silk Road",
    "recycling",
    "chess",
];

const STYLES: [&str; 8] = [
    "",
    " Keep it simple.",
    " Be precise.",
    " Use an example.",
    " Write for an expert.",
    " Be brief.",
    " Start with a definition.",
    " End with a question.",
];

const AUDIENCES: [&str; 8] = [
    "",
    " The reader is a child.",
    " The reader is a student.",
    " The reader is an engineer.",
    " The reader is a historian.",
    " The reader is a farmer.",
    " The reader is a doctor.",
    " The reader is a musician.",
];

/// One challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The user message.
    pub prompt: String,
    /// Tokens to ask for.
    pub max_tokens: u32,
    /// Greedy (temperature 0) or sampled (temperature 0.7 with this seed).
    pub sampled_seed: Option<u64>,
    /// Log-probabilities asked for, as a client may ask (`None`, or the alternatives per
    /// token): about one challenge in four, with 0 to 3 alternatives.
    pub logprobs: Option<u8>,
}

/// A stream of numbers from a seed: BLAKE3 of (seed, counter).
struct Draw {
    seed: Hash,
    counter: u64,
}

impl Draw {
    fn next(&mut self) -> u64 {
        let mut input = self.seed.0.to_vec();
        input.extend_from_slice(&self.counter.to_le_bytes());
        self.counter += 1;
        let h = agora_crypto::hash(&input);
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.0[..8]);
        u64::from_le_bytes(b)
    }

    fn below(&mut self, n: usize) -> usize {
        // n is small; the modulo bias is below 2^-58.
        (self.next() % n as u64) as usize
    }
}

/// `n` challenges drawn from `seed`: half greedy, half sampled, 32 to 64 tokens.
pub fn challenges(seed: &Hash, n: usize) -> Vec<Challenge> {
    let mut d = Draw {
        seed: *seed,
        counter: 0,
    };
    (0..n)
        .map(|_| {
            let sampled = d.next() % 2 == 1;
            draw_one(&mut d, 32..=64, sampled)
        })
        .collect()
}

fn draw_one(d: &mut Draw, tokens: std::ops::RangeInclusive<u32>, sampled: bool) -> Challenge {
    let template = TEMPLATES[d.below(TEMPLATES.len())];
    let topic = TOPICS[d.below(TOPICS.len())];
    let style = STYLES[d.below(STYLES.len())];
    let audience = AUDIENCES[d.below(AUDIENCES.len())];
    let n = 2 + d.below(8);
    let (lo, hi) = (*tokens.start(), (*tokens.end()).max(*tokens.start()));
    let max_tokens = lo + d.below((hi - lo + 1) as usize) as u32;
    let seed = d.next();
    // From the seed's top bits, so that the draws before and after stay what they were.
    let logprobs = (seed >> 62 == 0).then_some(((seed >> 56) & 3) as u8);
    let prompt = template
        .replace("{topic}", topic)
        .replace("{n}", &n.to_string())
        + style
        + audience;
    Challenge {
        prompt,
        max_tokens,
        sampled_seed: sampled.then_some(seed),
        logprobs,
    }
}

/// One round: for each of `miners` miners, `per_miner` challenges drawn from `seed`, alternating
/// greedy (first) and sampled, each asking for a number of tokens in `tokens`.
pub fn round(
    seed: &Hash,
    miners: usize,
    per_miner: usize,
    tokens: std::ops::RangeInclusive<u32>,
) -> Vec<Vec<Challenge>> {
    let mut d = Draw {
        seed: *seed,
        counter: 0,
    };
    (0..miners)
        .map(|_| {
            (0..per_miner)
                .map(|j| draw_one(&mut d, tokens.clone(), j % 2 == 1))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_varied_challenges() {
        let a = challenges(&Hash([1; 32]), 40);
        assert_eq!(a, challenges(&Hash([1; 32]), 40));
        assert_ne!(a, challenges(&Hash([2; 32]), 40));
        let distinct: std::collections::BTreeSet<&str> =
            a.iter().map(|c| c.prompt.as_str()).collect();
        assert!(distinct.len() > 30, "{distinct:?}");
        assert!(a.iter().any(|c| c.sampled_seed.is_some()));
        assert!(a.iter().any(|c| c.sampled_seed.is_none()));
        assert!(a.iter().all(|c| (32..=64).contains(&c.max_tokens)));
        assert!(a.iter().all(|c| !c.prompt.contains('{')));
        // Some ask for log-probabilities, as clients may; most do not.
        let asking = a.iter().filter(|c| c.logprobs.is_some()).count();
        assert!((2..=20).contains(&asking), "{asking} of 40");
        assert!(a.iter().all(|c| c.logprobs.is_none_or(|n| n <= 3)));
    }

    #[test]
    fn a_round_alternates_greedy_and_sampled_and_rarely_repeats_a_prompt() {
        let r = round(&Hash([3; 32]), 9, 2, 16..=24);
        assert_eq!(r.len(), 9);
        for per in &r {
            assert_eq!(per.len(), 2);
            assert!(per[0].sampled_seed.is_none());
            assert!(per[1].sampled_seed.is_some());
            assert!(per.iter().all(|c| (16..=24).contains(&c.max_tokens)));
        }
        let many = round(&Hash([4; 32]), 200, 2, 16..=24);
        let distinct: std::collections::BTreeSet<&str> =
            many.iter().flatten().map(|c| c.prompt.as_str()).collect();
        assert!(distinct.len() > 390, "{}", distinct.len());
    }
}
