"""MT-bench over an OpenAI-compatible server, SGLang's or ours: answers every question's turns and reports tok/s
(and τ where the server reports it).

  client       python demo/sglang_inference.py client --base-url http://127.0.0.1:8000 --questions Q.jsonl
               (any OpenAI-compatible server, e.g. python -m specforge_het.inference.server)
  server_mode  python demo/sglang_inference.py server_mode --base BASE --draft EXPORTED_DRAFT --questions Q.jsonl
               launches sglang.launch_server with the speculative flags the export's config implies, waits for
               /health, runs the client against it, stops the server (--dry-run prints the launch command)
  engine_mode  python demo/sglang_inference.py engine_mode --base BASE --draft EXPORTED_DRAFT --questions Q.jsonl
               runs sglang.Engine in-process; τ = completion tokens ÷ verify steps from SGLang's meta_info

Question files: MT-bench JSONL, one {"question_id", "category", "turns": [str, ...]} per line.
SGLang needs a GPU; on a CPU machine only `client` against our server runs (that is how it is tested).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def read_questions(path: str, limit: int | None) -> list[dict]:
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}:{n}: not JSON ({e})")
        turns = row.get("turns")
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns) or not turns:
            raise SystemExit(f"{path}:{n}: expected a non-empty 'turns' list of strings")
        rows.append(row)
    return rows[:limit] if limit else rows


def chat(base_url: str, model: str, messages: list[dict], max_tokens: int) -> dict:
    data = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}).encode()
    req = urllib.request.Request(base_url.rstrip("/") + "/v1/chat/completions", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def served_model(base_url: str) -> str:
    """The id the server serves (GET /v1/models): servers answer an unknown `model` with a 404."""
    with urllib.request.urlopen(base_url.rstrip("/") + "/v1/models", timeout=60) as r:
        return json.loads(r.read())["data"][0]["id"]


def run_client(base_url: str, questions: list[dict], max_tokens: int, model: str | None = None) -> dict:
    model = model or served_model(base_url)
    tokens = steps = 0
    answers = []
    t0 = time.perf_counter()
    for q in questions:
        messages = []
        for turn in q["turns"]:
            messages.append({"role": "user", "content": turn})
            out = chat(base_url, model, messages, max_tokens)
            text = out["choices"][0]["message"]["content"]
            messages.append({"role": "assistant", "content": text})
            tokens += out["usage"]["completion_tokens"]
            steps += (out.get("spec") or {}).get("verify_steps", 0)
        answers.append({"question_id": q.get("question_id"), "answers": [m["content"] for m in messages[1::2]]})
    seconds = time.perf_counter() - t0
    return {"questions": len(questions), "completion_tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds if seconds else 0.0, "tau": tokens / steps if steps else None,
            "answers": answers}


def sglang_launch_command(base: str, draft: str, port: int, steps: int, topk: int, draft_tokens: int) -> list[str]:
    arch = json.loads((Path(draft) / "config.json").read_text())["architectures"][0]
    algo = "EAGLE3" if arch.endswith("Eagle3") else "EAGLE"
    return [sys.executable, "-m", "sglang.launch_server", "--model-path", base, "--port", str(port),
            "--speculative-algorithm", algo, "--speculative-draft-model-path", draft,
            "--speculative-num-steps", str(steps), "--speculative-eagle-topk", str(topk),
            "--speculative-num-draft-tokens", str(draft_tokens)]


def wait_healthy(base_url: str, timeout_s: float, proc) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(f"sglang.launch_server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise SystemExit(f"SGLang did not become healthy within {timeout_s:.0f} s")


def run_engine(base: str, draft: str, questions: list[dict], max_tokens: int, steps: int, topk: int,
               draft_tokens: int) -> dict:
    import sglang as sgl
    from transformers import AutoTokenizer

    cmd = sglang_launch_command(base, draft, 0, steps, topk, draft_tokens)
    algo = cmd[cmd.index("--speculative-algorithm") + 1]
    llm = sgl.Engine(model_path=base, speculative_algorithm=algo, speculative_draft_model_path=draft,
                     speculative_num_steps=steps, speculative_eagle_topk=topk,
                     speculative_num_draft_tokens=draft_tokens)
    tok = AutoTokenizer.from_pretrained(base)
    tokens = verify = 0
    t0 = time.perf_counter()
    for q in questions:
        messages = []
        for turn in q["turns"]:
            messages.append({"role": "user", "content": turn})
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            out = llm.generate(prompt, {"temperature": 0, "max_new_tokens": max_tokens})
            messages.append({"role": "assistant", "content": out["text"]})
            tokens += out["meta_info"]["completion_tokens"]
            verify += out["meta_info"].get("spec_verify_ct", 0)
    seconds = time.perf_counter() - t0
    llm.shutdown()
    return {"questions": len(questions), "completion_tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "tau": tokens / verify if verify else None}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["client", "server_mode", "engine_mode"])
    ap.add_argument("--questions", required=True, help="MT-bench question JSONL")
    ap.add_argument("--max-samples", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--base-url", default="http://127.0.0.1:30000")
    ap.add_argument("--base", help="base model path / hub id (server_mode, engine_mode)")
    ap.add_argument("--draft", help="exported SGLang draft folder (server_mode, engine_mode)")
    ap.add_argument("--port", type=int, default=30000)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--topk", type=int, default=8)
    ap.add_argument("--draft-tokens", type=int, default=32)
    ap.add_argument("--startup-timeout", type=float, default=900)
    ap.add_argument("--out", help="write the report (and answers) here as JSON")
    ap.add_argument("--dry-run", action="store_true", help="server_mode: print the launch command only")
    args = ap.parse_args(argv)
    questions = read_questions(args.questions, args.max_samples)
    if args.mode == "client":
        report = run_client(args.base_url, questions, args.max_tokens)
    else:
        if not (args.base and args.draft):
            raise SystemExit(f"{args.mode} needs --base and --draft")
        if args.mode == "engine_mode":
            report = run_engine(args.base, args.draft, questions, args.max_tokens, args.steps, args.topk,
                                args.draft_tokens)
        else:
            cmd = sglang_launch_command(args.base, args.draft, args.port, args.steps, args.topk, args.draft_tokens)
            if args.dry_run:
                print(" ".join(cmd))
                return
            proc = subprocess.Popen(cmd)
            try:
                wait_healthy(f"http://127.0.0.1:{args.port}", args.startup_timeout, proc)
                report = run_client(f"http://127.0.0.1:{args.port}", questions, args.max_tokens)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    summary = {k: v for k, v in report.items() if k != "answers"}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
