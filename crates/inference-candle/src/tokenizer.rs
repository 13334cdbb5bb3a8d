//! Byte-level BPE built from the GGUF's own vocabulary, as llama.cpp tokenizes SmolLM2.
//!
//! # Design
//! 1. Special tokens (vocabulary entries of type control or user-defined, such as
//!    `<|im_start|>`) are cut out of the text first, longest first, and map to their ids.
//! 2. The rest is pre-tokenized with the "smollm" rules: every number character is split off on
//!    its own, then the GPT-2 pattern splits words, number runs, punctuation runs and whitespace.
//!    Text no pattern matches stays a piece of its own.
//! 3. Each piece's bytes are mapped to printable characters (GPT-2's byte-to-unicode table) and
//!    merged pairwise by merge rank (lowest first, leftmost on ties) until no merge applies.
//! 4. Each resulting symbol is a vocabulary token; a symbol that is not falls back to its bytes.

use std::collections::BTreeMap;

use fancy_regex::Regex;

use crate::Error;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// The tokenizer.
#[derive(Debug)]
pub struct Tokenizer {
    tokens: Vec<String>,
    ids: BTreeMap<String, u32>,
    merges: BTreeMap<(String, String), u32>,
    /// Special tokens, longest first.
    specials: Vec<(String, u32)>,
    special_ids: Vec<bool>,
    byte_to_char: [char; 256],
    char_to_byte: BTreeMap<char, u8>,
    digits: Regex,
    words: Regex,
}

/// GPT-2's reversible map from bytes to printable characters.
fn byte_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable =
            (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let code = if printable {
            u32::from(b)
        } else {
            next += 1;
            next - 1
        };
        table[usize::from(b)] = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

impl Tokenizer {
    /// Build from the GGUF vocabulary: token strings, their types, and the merges (`"a b"`).
    pub fn new(tokens: Vec<String>, types: &[i32], merges: &[String]) -> Result<Self, Error> {
        let bad = |reason: String| Error::Backend(format!("tokenizer: {reason}"));
        let ids: BTreeMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut merge_map = BTreeMap::new();
        for (rank, m) in merges.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| bad(format!("merge {m:?} has no space")))?;
            merge_map.insert((a.to_owned(), b.to_owned()), rank as u32);
        }
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                let ty = types.get(*i).copied().unwrap_or(1);
                (ty == TYPE_CONTROL || ty == TYPE_USER_DEFINED) && !t.is_empty()
            })
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut special_ids = vec![false; tokens.len()];
        for (_, id) in &specials {
            special_ids[*id as usize] = true;
        }
        let byte_to_char = byte_table();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let digits = Regex::new(r"\p{N}").map_err(|e| bad(e.to_string()))?;
        let words =
            Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)")
                .map_err(|e| bad(e.to_string()))?;
        Ok(Tokenizer {
            tokens,
            ids,
            merges: merge_map,
            specials,
            special_ids,
            byte_to_char,
            char_to_byte,
            digits,
            words,
        })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Text to ids, special tokens recognised.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for fragment in self.split_specials(text) {
            match fragment {
                Fragment::Special(id) => out.push(id),
                Fragment::Text(t) => {
                    for piece in split_keep(&self.digits, t) {
                        for word in split_keep(&self.words, piece) {
                            self.encode_word(word, &mut out);
                        }
                    }
                }
            }
        }
        out
    }

    /// Ids to text (special tokens appear as their text).
    pub fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        let mut bytes = Vec::new();
        for &id in ids {
            let token = self
                .tokens
                .get(id as usize)
                .ok_or(Error::UnknownToken(id))?;
            if self.special_ids[id as usize] {
                bytes.extend_from_slice(token.as_bytes());
            } else {
                for c in token.chars() {
                    match self.char_to_byte.get(&c) {
                        Some(&b) => bytes.push(b),
                        None => bytes.extend_from_slice(c.to_string().as_bytes()),
                    }
                }
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The raw bytes of one token (for streaming: a character may span tokens).
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>, Error> {
        let token = self
            .tokens
            .get(id as usize)
            .ok_or(Error::UnknownToken(id))?;
        if self.special_ids[id as usize] {
            return Ok(token.as_bytes().to_vec());
        }
        Ok(token
            .chars()
            .flat_map(|c| match self.char_to_byte.get(&c) {
                Some(&b) => vec![b],
                None => c.to_string().into_bytes(),
            })
            .collect())
    }

    fn split_specials<'t>(&self, text: &'t str) -> Vec<Fragment<'t>> {
        let mut fragments = vec![Fragment::Text(text)];
        for (special, id) in &self.specials {
            let mut next = Vec::with_capacity(fragments.len());
            for f in fragments {
                match f {
                    Fragment::Text(t) if t.contains(special.as_str()) => {
                        let mut rest = t;
                        while let Some(at) = rest.find(special.as_str()) {
                            if at > 0 {
                                next.push(Fragment::Text(&rest[..at]));
                            }
                            next.push(Fragment::Special(*id));
                            rest = &rest[at + special.len()..];
                        }
                        if !rest.is_empty() {
                            next.push(Fragment::Text(rest));
                        }
                    }
                    other => next.push(other),
                }
            }
            fragments = next;
        }
        fragments
    }

    fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        let mapped: String = word
            .bytes()
            .map(|b| self.byte_to_char[usize::from(b)])
            .collect();
        let mut symbols: Vec<String> = mapped.chars().map(String::from).collect();
        loop {
            let mut best: Option<(u32, usize)> = None;
            for i in 0..symbols.len().saturating_sub(1) {
                if let Some(&rank) = self
                    .merges
                    .get(&(symbols[i].clone(), symbols[i + 1].clone()))
                    && best.is_none_or(|(r, _)| rank < r)
                {
                    best = Some((rank, i));
                }
            }
            let Some((_, i)) = best else { break };
            let right = symbols.remove(i + 1);
            symbols[i].push_str(&right);
        }
        for s in symbols {
            match self.ids.get(&s) {
                Some(&id) => out.push(id),
                None => {
                    // Not in the vocabulary: one token per byte.
                    for c in s.chars() {
                        if let Some(&id) = self.ids.get(&c.to_string()) {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fragment<'t> {
    Text(&'t str),
    Special(u32),
}

/// Split `text` at the matches of `re`, keeping both the matches and the text between them.
fn split_keep<'t>(re: &Regex, text: &'t str) -> Vec<&'t str> {
    let mut out = Vec::new();
    let mut last = 0;
    for m in re.find_iter(text).flatten() {
        if m.start() > last {
            out.push(&text[last..m.start()]);
        }
        if m.end() > m.start() {
            out.push(m.as_str());
        }
        last = m.end();
    }
    if last < text.len() {
        out.push(&text[last..]);
    }
    out
}
