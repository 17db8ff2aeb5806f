"""The OpenAI-compatible server over loopback: chat and completions, streaming and not, greedy output identical to
the base's, clear 4xx errors, and a bounded load test with concurrent clients."""
import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from specforge_het.inference.engine import hf_greedy
from specforge_het.inference.server import Engine, build_server
from specforge_het.modeling.base import load_base
from specforge_het.modeling.drafter import build_drafter

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
        assert json.loads(r.read()) == {"status": "ok"}
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


def test_concurrent_clients(server):
    """8 clients at once (bounded: 12 new tokens each): every answer is complete and equals the greedy output."""
    url, engine = server
    prompts = [f"def function_{i}(value):\n" for i in range(8)]

    def one(p):
        return json.loads(post(url + "/v1/completions", {"prompt": p, "max_tokens": 12})[1])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, prompts))
    for p, r in zip(prompts, results):
        ids = engine.base.tokenizer(p, add_special_tokens=False)["input_ids"]
        want = hf_greedy(engine.base, ids, 12, engine.eos)[len(ids):]
        assert r["choices"][0]["text"] == engine.base.tokenizer.decode(want, skip_special_tokens=True)


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
