"""The OpenAI-compatible server over loopback: chat and completions, streaming and not, greedy output identical to
the base's, clear 4xx errors, and a bounded load test with concurrent clients."""
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from specforge_het.inference.engine import hf_greedy
from specforge_het.inference.server import Engine, build_server
from specforge_het.modeling.base import load_base
from specforge_het.families.eagle.model import build_drafter

from conftest import make_cfg


@pytest.fixture(scope="module")
def server(tiny_base, tmp_path_factory):
    cfg = make_cfg(tmp_path_factory.mktemp("serve"), tiny_base)
    base = load_base(cfg.base)
    torch.manual_seed(0)
    drafter = build_drafter(base).eval()
    eos = {base.tokenizer.eos_token_id}
    engine = Engine(base, drafter, dict(depth=3, top_k=3, total_tokens=8), eos, "tiny", max_tokens_limit=64,
                    default_max_tokens=16)
    srv = build_server(engine, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", engine
    srv.shutdown()


def post(url, payload, raw=None):
    data = raw if raw is not None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_and_models(server):
    url, _ = server
    with urllib.request.urlopen(url + "/health") as r:
        assert json.loads(r.read())["status"] == "ok"
    with urllib.request.urlopen(url + "/v1/models") as r:
        assert json.loads(r.read())["data"][0]["id"] == "tiny"


def test_completion_is_the_base_greedy_output(server):
    url, engine = server
    prompt = "def read_config(path):\n"
    status, body = post(url + "/v1/completions", {"prompt": prompt, "max_tokens": 20})
    assert status == 200
    out = json.loads(body)
    ids = engine.base.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    want = hf_greedy(engine.base, ids, 20, engine.eos)[len(ids):]
    assert out["choices"][0]["text"] == engine.base.tokenizer.decode(want, skip_special_tokens=True)
    assert out["usage"]["completion_tokens"] == len(want) and out["spec"]["verify_steps"] >= 1


def test_chat_stream_equals_non_stream(server):
    url, _ = server
    payload = {"messages": [{"role": "user", "content": "Explain this function: def f(x): return x + 1"}],
               "max_tokens": 24}
    status, body = post(url + "/v1/chat/completions", payload)
    assert status == 200
    full = json.loads(body)["choices"][0]["message"]["content"]
    status, body = post(url + "/v1/chat/completions", {**payload, "stream": True})
    events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == full
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("raw,payload,status,param", [
    (b"{not json", None, 400, None),
    (None, {"messages": "hi"}, 400, "messages"),
    (None, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, 400, "max_tokens"),
    (None, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
    (None, {"prompt": "x", "temperature": -1}, 400, "temperature"),
    (None, {"prompt": ""}, 400, "prompt"),
])
def test_malformed_requests_get_4xx_json(server, raw, payload, status, param):
    url, _ = server
    path = "/v1/completions" if payload and "prompt" in payload else "/v1/chat/completions"
    code, body = post(url + path, payload, raw)
    err = json.loads(body)["error"]
    assert code == status and err["type"] == "invalid_request_error" and err["param"] == param and err["message"]
    code, body = post(url + "/v1/nothing", {})
    assert code == 404 and "error" in json.loads(body)


def test_concurrent_clients_are_batched_and_answer_as_alone(server):
    """16 clients at once (bounded: 6–20 new tokens each, different per client): requests decode together (the
    batcher's largest batch holds more than one row) and every answer equals the request's sequential answer."""
    url, engine = server
    jobs = [(f"def function_{i}(value):\n", 6 + i) for i in range(16)]

    def one(job):
        return json.loads(post(url + "/v1/completions", {"prompt": job[0], "max_tokens": job[1]})[1])

    sequential = [one(j)["choices"][0]["text"] for j in jobs]
    before = dict(engine.batcher.stats)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, jobs))
    assert [r["choices"][0]["text"] for r in results] == sequential
    assert engine.batcher.stats["max_rows"] > 1 and engine.batcher.stats["batches"] - before["batches"] < 16
    for (p, max_tokens), text in zip(jobs[:4], sequential):
        ids = engine.base.tokenizer(p, add_special_tokens=False)["input_ids"]
        want = hf_greedy(engine.base, ids, max_tokens, engine.eos)[len(ids):]
        assert text == engine.base.tokenizer.decode(want, skip_special_tokens=True)


def test_mt_bench_client_against_our_server(server, tmp_path):
    """demo/sglang_inference.py's client (the one pointed at SGLang on a GPU) on an MT-bench file, multi-turn."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("sglang_inference", root / "demo" / "sglang_inference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    url, _ = server
    qfile = tmp_path / "question.jsonl"
    qfile.write_text("".join(json.dumps({"question_id": i, "category": "coding",
                                         "turns": [f"Write a function number {i}.", "Now document it."]}) + "\n"
                             for i in range(3)))
    report = mod.run_client(url, mod.read_questions(str(qfile), 2), max_tokens=8)
    assert report["questions"] == 2 and len(report["answers"][0]["answers"]) == 2
    assert report["completion_tokens"] > 0 and report["tau"] >= 1.0
    # server_mode builds SGLang's launch command from the export's architecture (no SGLang run here).
    draft = tmp_path / "draft"
    draft.mkdir()
    (draft / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLMEagle3"]}))
    out = subprocess.run([sys.executable, str(root / "demo" / "sglang_inference.py"), "server_mode", "--questions",
                          str(qfile), "--base", "B", "--draft", str(draft), "--dry-run"],
                         capture_output=True, text=True, check=True).stdout
    assert "sglang.launch_server --model-path B" in out and "--speculative-algorithm EAGLE3" in out


def raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, dict]:
    """A hand-written HTTP request (headers a client library would refuse to send) → status, JSON body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("raw,payload,status,param", [
    (b'{"prompt": "x", "temperature": NaN}', None, 400, "temperature"),
    (b'{"prompt": "x", "top_p": Infinity}', None, 400, "top_p"),
    (None, {"prompt": "x", "seed": 2**70}, 400, "seed"),
    (None, {"prompt": "x", "seed": "7"}, 400, "seed"),
    (None, {"prompt": "x", "model": "gpt-4"}, 404, "model"),
    (None, {"prompt": "x", "n": 0}, 400, "n"),
    (None, {"prompt": "x", "n": 1000}, 400, "n"),
    (None, {"prompt": "x", "stop": 5}, 400, "stop"),
    (None, {"prompt": "x", "stop": ["a", ""]}, 400, "stop"),
    (None, {"prompt": "x", "logprobs": True}, 400, "logprobs"),
    (None, {"prompt": "x", "presence_penalty": 0.5}, 400, "presence_penalty"),
    (None, {"prompt": "word " * 1100, "max_tokens": 8}, 400, "prompt"),
    (b"[1, 2]", None, 400, None),
    (b"\xff\xfe", None, 400, None),
])
def test_every_bad_field_is_a_4xx_json_error(server, raw, payload, status, param):
    url, _ = server
    code, body = post(url + "/v1/completions", payload, raw)
    err = json.loads(body)["error"]
    assert code == status and err["param"] == param and err["message"], body
    assert post(url + "/v1/completions", {"prompt": "x", "max_tokens": 2})[0] == 200  # still serving


@pytest.mark.parametrize("length,status", [("abc", 400), ("-5", 400), ("1e3", 400), (str(1 << 30), 413)])
def test_bad_content_length_is_answered_not_dropped(server, length, status):
    url, _ = server
    code, body = raw_request(url, f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {length}",
                             b'{"prompt": "x"}')
    assert code == status and "Content-Length" in body["error"]["message"] or "exceeds" in body["error"]["message"]


def test_stop_strings_and_n_are_honoured(server):
    url, engine = server
    payload = {"prompt": "def read_config(path):\n", "max_tokens": 24}
    full = json.loads(post(url + "/v1/completions", payload)[1])["choices"][0]["text"]
    stop = full[6:9]
    assert len(stop) == 3
    out = json.loads(post(url + "/v1/completions", {**payload, "stop": [stop, "never-there"]})[1])
    assert out["choices"][0]["text"] == full[:full.index(stop)] and out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] < json.loads(post(url + "/v1/completions", payload)[1])["usage"][
        "completion_tokens"]
    out = json.loads(post(url + "/v1/completions", {**payload, "n": 3})[1])
    assert [c["index"] for c in out["choices"]] == [0, 1, 2] and {c["text"] for c in out["choices"]} == {full}
    status, body = post(url + "/v1/completions", {**payload, "n": 2, "stream": True, "stop": stop})
    chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    for c in (0, 1):
        assert "".join(k["choices"][0]["text"] for k in chunks if k["choices"][0]["index"] == c) == full[
            :full.index(stop)]
    sampled = json.loads(post(url + "/v1/completions", {**payload, "n": 2, "temperature": 1.0, "seed": 3})[1])
    again = json.loads(post(url + "/v1/completions", {**payload, "n": 2, "temperature": 1.0, "seed": 3})[1])
    assert [c["text"] for c in sampled["choices"]] == [c["text"] for c in again["choices"]]  # a seed reproduces


def test_an_internal_error_is_a_500_json_body_and_the_server_keeps_serving(server):
    url, engine = server
    real = engine.batcher.run_batch

    def broken(jobs):
        raise RuntimeError("simulated failure inside the decoder")

    engine.batcher.run_batch = broken
    try:
        code, body = post(url + "/v1/completions", {"prompt": "x", "max_tokens": 4})
        assert code == 500 and "simulated failure" in json.loads(body)["error"]["message"]
        status, body = post(url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                            "max_tokens": 4, "stream": True})
        assert status == 200 and "simulated failure" in body
    finally:
        engine.batcher.run_batch = real
    assert post(url + "/v1/completions", {"prompt": "x", "max_tokens": 4})[0] == 200


@pytest.fixture(scope="module")
def long_server(server):
    """The same pair with no end-of-sequence token and a high max_tokens limit: requests run until cancelled."""
    _, engine = server
    long_engine = Engine(engine.base, engine.drafter, engine.params, set(), "tiny", max_tokens_limit=900,
                         default_max_tokens=900)
    srv = build_server(long_engine, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", long_engine
    srv.shutdown()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_disconnects_stops_its_decode(long_server, stream):
    url, engine = long_server
    host, port = url.removeprefix("http://").split(":")
    before = engine.batcher.stats["cancelled"]
    body = json.dumps({"prompt": "def f(x):\n", "max_tokens": 900, "stream": stream}).encode()
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    if stream:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.close()
    deadline = time.time() + 120
    while engine.batcher.stats["cancelled"] == before and time.time() < deadline:
        time.sleep(0.05)
    assert engine.batcher.stats["cancelled"] == before + 1
    assert engine.batcher.stats["cancelled_tokens"] < 900 * (before + 1)
    assert post(url + "/v1/completions", {"prompt": "x", "max_tokens": 3})[0] == 200
