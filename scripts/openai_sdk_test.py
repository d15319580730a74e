#!/usr/bin/env python3
"""The official `openai` Python SDK against Meridian's HTTP front door.

Starts `meridian demo --serve` (real edge, real QUIC workers), points `openai.OpenAI` at its
HTTP front door, and checks streaming and non-streaming chat, completions, usage, models,
response headers and error mapping. Run by scripts/test.sh in a venv with `openai` installed:

    python scripts/openai_sdk_test.py target/debug/meridian
"""
import json
import subprocess
import sys
import tempfile

import openai

MODEL = "llama-3-8b"


def main(binary):
    cert_dir = tempfile.mkdtemp(prefix="meridian-openai-")
    proc = subprocess.Popen(
        [binary, "demo", "--serve", "--json", "--listen", "127.0.0.1:0", "--ttft-ms", "2", "--itl-ms", "1",
         "--max-tokens", "6", "--cert-dir", cert_dir],
        stdout=subprocess.PIPE, text=True)
    try:
        started = json.loads(proc.stdout.readline())
        base = started["http_url"] + "/v1"
        # The demo's edge requires a credential: the OpenAI SDK sends api_key as the bearer.
        client = openai.OpenAI(base_url=base, api_key=started["api_keys"]["acme"], default_headers={"x-meridian-area": "jp"},
                               max_retries=0, timeout=30)
        return run(client, base, started["api_keys"])
    finally:
        proc.kill()
        proc.wait()


def run(client, base, keys):
    passed, failed = 0, 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            fn()
            passed += 1
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001 - report every failure and keep going
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")

    def streaming_chat():
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello from Tokyo"}], stream=True)
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[0].object == "chat.completion.chunk", chunks[0]
        assert len(text.split()) == 6, text
        assert chunks[-1].choices[0].finish_reason == "stop", chunks[-1]

    def streaming_usage():
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "usage please"}], stream=True, max_tokens=3,
            stream_options={"include_usage": True})
        chunks = list(stream)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3, chunks[-1]
        assert chunks[-1].choices == []

    def whole_chat():
        r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert r.object == "chat.completion"
        assert r.choices[0].message.role == "assistant" and r.choices[0].message.content, r
        assert r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens == 4 and r.usage.total_tokens == r.usage.prompt_tokens + 4

    def completions():
        r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=3)
        assert r.object == "text_completion" and r.choices[0].text, r
        stream = client.completions.create(model=MODEL, prompt="stream it", max_tokens=2, stream=True)
        texts = [c.choices[0].text for c in stream if c.choices]
        assert "".join(texts).strip(), texts

    def models():
        assert MODEL in [m.id for m in client.models.list()]

    def routing_headers():
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "where?"}], extra_headers={"x-meridian-area": "fr"})
        assert raw.headers["x-meridian-region"] == "frankfurt", dict(raw.headers)
        assert raw.parse().choices[0].message.content

    def unknown_model():
        try:
            client.chat.completions.create(model="gpt-unknown", messages=[{"role": "user", "content": "x"}])
        except openai.NotFoundError as e:
            assert e.status_code == 404 and e.body["code"] == "model_not_found", e.body
        else:
            raise AssertionError("expected NotFoundError")

    def bad_request():
        try:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                           extra_headers={"x-meridian-area": "NOT VALID"})
        except openai.BadRequestError as e:
            assert e.status_code == 400, e
        else:
            raise AssertionError("expected BadRequestError")

    def wrong_key():
        bad = openai.OpenAI(base_url=base, api_key="mk_demo-acme_wrong", max_retries=0, timeout=30)
        try:
            bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        except openai.AuthenticationError as e:
            assert e.status_code == 401 and e.body["code"] == "unauthorized", e.body
        else:
            raise AssertionError("expected AuthenticationError")

    def sovereign_key_goes_sovereign():
        bund = openai.OpenAI(base_url=base, api_key=keys["bund"], max_retries=0, timeout=30,
                             default_headers={"x-meridian-area": "jp"})
        raw = bund.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Prüfe"}])
        assert raw.headers["x-meridian-region"] == "frankfurt-sovereign", dict(raw.headers)

    def huge_max_tokens():
        try:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                           max_tokens=4611686018427387904)
        except openai.BadRequestError as e:
            assert e.status_code == 400, e
        else:
            raise AssertionError("expected BadRequestError")

    for name, fn in [("wrong key -> 401", wrong_key), ("bund's key -> sovereign pool", sovereign_key_goes_sovereign),
                     ("max_tokens 2^62 -> 400", huge_max_tokens), ("streaming chat", streaming_chat), ("streaming usage", streaming_usage),
                     ("non-streaming chat", whole_chat), ("completions", completions), ("models", models),
                     ("routing headers", routing_headers), ("unknown model -> 404", unknown_model),
                     ("bad request -> 400", bad_request)]:
        check(name, fn)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
