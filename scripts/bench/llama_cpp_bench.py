#!/usr/bin/env python3
"""llama.cpp side of `agora bench inference`: same GGUF, same prompt tokens, same thread count.

Usage: python llama_cpp_bench.py MODEL.gguf THREADS GEN_TOKENS PROMPT_IDS_COMMA_SEPARATED [ROUNDS]
Prints one line: `prompt_tps gen_tps ttft_ms`, each the median over ROUNDS rounds (default 1),
as `agora bench inference` reports its own. Needs llama-cpp-python (see
scripts/fixtures/llama_cpp_fixtures.py for an install line).
"""
import sys
import time

from llama_cpp import Llama


def one_round(llm, ids, n):
    """Prompt processing, time to first token and generation, from an empty context."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    prompt_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    tok = llm.sample(temp=0)
    ttft = prompt_s + (time.perf_counter() - t1)
    t2 = time.perf_counter()
    for _ in range(n):
        llm.eval([tok])
        tok = llm.sample(temp=0)
    gen_s = time.perf_counter() - t2
    return len(ids) / prompt_s, n / gen_s, ttft * 1000


def main():
    model, threads, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ids = [int(x) for x in sys.argv[4].split(",")]
    rounds = max(1, int(sys.argv[5])) if len(sys.argv) > 5 else 1
    llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                n_batch=512, verbose=False)
    # Warm up with one whole round, untimed, as `agora bench inference` does.
    one_round(llm, ids, n)
    results = [one_round(llm, ids, n) for _ in range(rounds)]
    # The upper median of each figure, as the Rust side takes it.
    p, g, t = (sorted(column)[len(column) // 2] for column in zip(*results))
    print(f"{p:.2f} {g:.2f} {t:.2f}")


if __name__ == "__main__":
    main()
