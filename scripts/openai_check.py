"""Talk to an Agora gateway with the official `openai` package: one plain and one streaming
chat completion, both with `usage`, and one with log-probabilities. Usage: python openai_check.py http://127.0.0.1:8700/v1"""

import sys

import openai


def main() -> int:
    base = sys.argv[1]
    client = openai.OpenAI(base_url=base, api_key="agora-devnet")
    models = client.models.list()
    model = models.data[0].id
    messages = [
        {"role": "system", "content": "You are a helpful AI assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    reply = client.chat.completions.create(
        model=model, messages=messages, max_tokens=24, temperature=0
    )
    text = reply.choices[0].message.content
    usage = reply.usage
    assert text, "empty answer"
    assert reply.choices[0].finish_reason in ("stop", "length"), reply.choices[0].finish_reason
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, usage
    print(f"plain: {text!r} usage={usage.prompt_tokens}+{usage.completion_tokens}")

    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            if delta.content:
                pieces.append(delta.content)
            if chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        if chunk.usage:
            usage = chunk.usage
    streamed = "".join(pieces)
    assert streamed, "empty streamed answer"
    assert finish in ("stop", "length"), finish
    assert usage is not None and usage.completion_tokens > 0, usage
    assert streamed == text, f"greedy answers differ: {streamed!r} vs {text!r}"
    print(f"stream: {len(pieces)} chunks, usage={usage.prompt_tokens}+{usage.completion_tokens}")

    reply = client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens, (len(content), reply.usage)
    for t in content:
        assert len(t.top_logprobs) == 3, t
        # Greedy: every token is its position's most likely one.
        assert t.token == t.top_logprobs[0].token and t.logprob == t.top_logprobs[0].logprob, t
        assert 0 >= t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob, t
    joined = b"".join(bytes(t.bytes) for t in content)
    answer = reply.choices[0].message.content.encode()
    # The tokens' bytes are the answer (the last may end inside a character the text leaves out).
    assert joined.startswith(answer) and len(joined) - len(answer) < 4, (joined, answer)
    assert text.encode().startswith(answer), (text, answer)
    print(f"logprobs: {len(content)} tokens, first {content[0].token!r} at {content[0].logprob:.3f}")

    # The same conversation as content parts, the system turn as `developer`: the same answer.
    parts = [
        {"role": "developer", "content": [{"type": "text", "text": messages[0]["content"]}]},
        {"role": "user", "content": [{"type": "text", "text": messages[1]["content"]}]},
    ]
    reply = client.chat.completions.create(model=model, messages=parts, max_tokens=24, temperature=0)
    assert reply.choices[0].message.content == text, (reply.choices[0].message.content, text)
    print("content parts: same answer")

    try:
        client.chat.completions.create(model="gpt-4", messages=messages, max_tokens=4)
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e
        print(f"unknown model: {e.status_code}")
    else:
        raise AssertionError("a model nobody serves was answered")

    try:
        client.chat.completions.create(model=model, messages=[], max_tokens=4)
    except openai.BadRequestError as e:
        print(f"bad request: {e.status_code}")
    else:
        raise AssertionError("an empty conversation was accepted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
