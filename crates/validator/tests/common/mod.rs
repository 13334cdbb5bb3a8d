//! Shared by the validator's tests: the real model, fetched like `agora model fetch` when
//! missing, loaded once per test binary.

use std::sync::OnceLock;

use agora_inference_candle::CandleEngine;

pub fn engine() -> &'static CandleEngine {
    static ENGINE: OnceLock<CandleEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = agora_inference::model::default_dir();
        let path = agora_inference::model::fetch(&dir, &mut |_| {}).expect("fetch the model");
        CandleEngine::load(&path).expect("load the model")
    })
}

/// A challenge's prompt tokens for the user message `q`.
pub fn prompt(q: &str) -> Vec<u32> {
    agora_validator::role::prompt_tokens(engine(), q).expect("render and tokenize")
}
