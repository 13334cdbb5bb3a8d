//! Challenge prompts from a seed: every validator that sees the same finalized block hash draws
//! the same challenges, and a miner cannot know them before that block exists.

use agora_primitives::Hash;

const TEMPLATES: [&str; 10] = [
    "Explain {topic} in two sentences.",
    "What is the most important fact about {topic}?",
    "Write a short poem about {topic}.",
    "Give three bullet points about {topic}.",
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

/// One challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The user message.
    pub prompt: String,
    /// Tokens to ask for.
    pub max_tokens: u32,
    /// Greedy (temperature 0) or sampled (temperature 0.7 with this seed).
    pub sampled_seed: Option<u64>,
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
            let template = TEMPLATES[d.below(TEMPLATES.len())];
            let topic = TOPICS[d.below(TOPICS.len())];
            let max_tokens = 32 + d.below(33) as u32;
            let sampled = d.next() % 2 == 1;
            let seed = d.next();
            Challenge {
                prompt: template.replace("{topic}", topic),
                max_tokens,
                sampled_seed: sampled.then_some(seed),
            }
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
        assert!(a.iter().all(|c| !c.prompt.contains("{topic}")));
    }
}
