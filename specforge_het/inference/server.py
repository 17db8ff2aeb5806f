"""An OpenAI-compatible HTTP server on the speculative decoding engine.

    python -m specforge_het.inference.server --@demo --@eagle2 [--serve.port 8000] [--inference.drafter_path DIR]

Endpoints: POST /v1/chat/completions (also `"stream": true`, server-sent events), POST /v1/completions,
GET /v1/models, GET /health (with the batcher's counters). Responses carry the usual `usage` plus `spec` (verify
steps, τ). Every bad request gets a 4xx JSON error `{"error": {"message", "type", "param", "code"}}` (an unknown
`model` a 404), an internal failure a 500 JSON body, and the server keeps serving. Concurrent requests decode
together (batcher.py: up to serve.max_batch rows, gathered for serve.batch_wait_ms); `n` choices are rows of the
batch, `stop` strings end a row early, and a client that disconnects has its rows dropped at the next step.
Greedy (temperature 0, the default) output is token-identical to the base's, batched or not.
"""
from __future__ import annotations

import json
import logging
import math
import select
import socket
import time
import uuid
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..config.cli import run_entry, save_resolved_config
from ..config.schema import RunConfig
from ..config.errors import ConfigError
from ..data.conversations import render
from .batcher import Batcher, Job
from .engine import Sampling, speculative_decode_batch

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 8 << 20


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


# Request fields that would change the answer in ways this server does not implement: refused, never ignored.
UNSUPPORTED = {"logprobs": (None, False), "top_logprobs": (None, 0), "logit_bias": (None, {}),
               "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0), "tools": (None, []),
               "tool_choice": (None, "none"), "functions": (None, []), "response_format": (None, {"type": "text"}),
               "best_of": (None, 1), "echo": (None, False), "suffix": (None, "")}
SEED_RANGE = (0, 2**63 - 1)


def _number(body: dict, name: str, default: float, ok, expected: str) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise RequestError(400, f"{name} must be {expected}, got {value!r}", name)
    return float(value)


def _integer(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(400, f"{name} must be an integer in [{low}, {high}], got {value!r}", name)
    return value


class Engine:
    """The base + drafter pair behind a request batcher, with the request-level checks."""

    def __init__(self, base, drafter, params: dict, eos: set[int], model_name: str, max_tokens_limit: int,
                 default_max_tokens: int, max_batch: int = 8, batch_wait_ms: float = 20.0):
        self.base, self.drafter, self.params, self.eos = base, drafter, params, eos
        self.model_name, self.limit, self.default_max = model_name, max_tokens_limit, default_max_tokens
        self.max_batch = max_batch
        config = base.config
        self.context = min(x for x in (getattr(config, "max_position_embeddings", None), base.sliding_window,
                                       10**9) if x)
        self.batcher = Batcher(self.run_batch, max_batch, batch_wait_ms / 1000)

    def check(self, body: dict) -> None:
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise RequestError(404, f"the model {model!r} does not exist; this server serves {self.model_name!r}",
                               "model", "model_not_found")
        for name, defaults in UNSUPPORTED.items():
            if name in body and body[name] not in defaults:
                raise RequestError(400, f"{name} is not supported by this server (leave it out)", name)

    def sampling(self, body: dict) -> tuple[Sampling, bool]:
        temperature = _number(body, "temperature", 0.0, lambda v: v >= 0, "a finite number >= 0")
        top_p = _number(body, "top_p", 1.0, lambda v: 0 < v <= 1, "a number in (0, 1]")
        seeded = body.get("seed") is not None
        seed = _integer(body, "seed", 0, *SEED_RANGE) if seeded else 0
        return Sampling(temperature, top_p, seed), seeded

    def max_tokens(self, body: dict, prompt: list[int]) -> int:
        name = "max_tokens" if "max_tokens" in body else "max_completion_tokens"
        value = body.get(name, self.default_max)
        if value is None:
            value = self.default_max
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RequestError(400, f"{name} must be a positive integer, got {value!r}", name)
        if value > self.limit:
            raise RequestError(400, f"{name} {value} exceeds this server's limit of {self.limit}", name)
        if len(prompt) + value > self.context:
            raise RequestError(400, f"this model's context is {self.context} tokens; the prompt has {len(prompt)} "
                               f"and {name} asks for {value} more", "messages" if "messages" in body else "prompt")
        return value

    def choices(self, body: dict) -> tuple[int, tuple[str, ...]]:
        n = _integer(body, "n", 1, 1, self.max_batch)
        stop = body.get("stop")
        stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
            raise RequestError(400, "stop must be a non-empty string or a list of up to 4 of them", "stop")
        return n, tuple(stop)

    def prompt(self, body: dict, chat: bool) -> list[int]:
        tok = self.base.tokenizer
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in messages):
                raise RequestError(400, "messages must be a non-empty list of {role, content} strings", "messages")
            try:
                return tok(render(tok, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
            except Exception as e:  # the chat template rejects the conversation (roles, order)
                raise RequestError(400, f"the chat template cannot render these messages: {e}", "messages") from None
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise RequestError(400, "prompt must be a non-empty string", "prompt")
        return tok(prompt, add_special_tokens=False)["input_ids"]

    def job(self, body: dict, chat: bool) -> Job:
        """A checked request, ready for the batcher (every 4xx is raised here, before any decoding)."""
        self.check(body)
        prompt = self.prompt(body, chat)
        max_tokens = self.max_tokens(body, prompt)
        sampling, seeded = self.sampling(body)
        n, stop = self.choices(body)
        decode = partial(self.base.tokenizer.decode, skip_special_tokens=True)
        return Job(prompt, max_tokens, sampling, decode, n, stop, seeded, bool(body.get("stream")))

    def run_batch(self, jobs: list[Job]) -> None:
        """Every choice of every job as one row of a ragged batch (the batcher groups jobs of one sampler)."""
        owners = [(job, c) for job in jobs for c in range(job.n)]
        results = speculative_decode_batch(
            self.base, self.drafter, [job.prompt for job, _ in owners], [job.max_tokens for job, _ in owners],
            self.eos, **self.params, sampling=jobs[0].sampling,
            on_tokens=lambda r, new: owners[r][0].observe(owners[r][1], new),
            cancelled=lambda r: owners[r][0].cancelled(owners[r][1]))
        for (job, c), res in zip(owners, results):
            job.observe(c, res.tokens[len(job.prompt):], final=True)
            job.steps += res.steps
            job.emitted += res.emitted

    def generate(self, job: Job) -> Job:
        """Submit and wait (non-streaming)."""
        self.batcher.submit(job)
        job.done.wait()
        return job


def _peer_closed(sock) -> bool:
    """True when the client has closed its end (readable with nothing to read) — the socket is only peeked."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def make_handler(engine: Engine):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet: one line per request would drown the console under load
            pass

        def _json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, param=None, code=None) -> None:
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

        def do_GET(self):
            if self.path == "/health":
                self._json(200, {"status": "ok", **engine.batcher.stats})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": engine.model_name, "object": "model",
                                                             "owned_by": "specforge_het"}]})
            else:
                self._error(404, f"no route GET {self.path}")

        def _body(self) -> dict:
            raw = self.headers.get("Content-Length", "0").strip()
            if not raw.isdigit():
                self.close_connection = True  # the body's extent is unknown: nothing more can be read from here
                raise RequestError(400, f"Content-Length must be a non-negative integer, got {raw!r}")
            length = int(raw)
            if length > MAX_BODY_BYTES:
                self.close_connection = True
                raise RequestError(413, f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RequestError(400, f"request body is not valid JSON: {e}") from None
            if not isinstance(body, dict):
                raise RequestError(400, "request body must be a JSON object")
            return body

        def do_POST(self):
            chat = self.path == "/v1/chat/completions"
            try:
                if not chat and self.path != "/v1/completions":
                    self.close_connection = True
                    raise RequestError(404, f"no route POST {self.path}")
                job = engine.job(self._body(), chat)
                if job.stream:
                    return self._stream(job, chat)
                job.gone = partial(_peer_closed, self.connection)
                engine.generate(job)
                if job.error is not None:
                    raise job.error
                self._json(200, self._response(job, chat))
            except RequestError as e:
                self._error(e.status, str(e), e.param, e.code)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            except Exception as e:  # noqa: BLE001 — a 500 JSON body, and the server keeps serving
                log.exception("request failed")
                self.close_connection = True
                self._error(500, f"internal error: {type(e).__name__}: {e}")

        def _response(self, job: Job, chat: bool) -> dict:
            choices = []
            for c in range(job.n):
                choice = {"index": c, "finish_reason": job.finish_reason(c, engine.eos)}
                choice.update({"message": {"role": "assistant", "content": job.texts[c]}} if chat
                              else {"text": job.texts[c]})
                choices.append(choice)
            completion = sum(job.completion_tokens(c) for c in range(job.n))
            return {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:12]}",
                    "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                    "model": engine.model_name, "choices": choices,
                    "usage": {"prompt_tokens": len(job.prompt), "completion_tokens": completion,
                              "total_tokens": len(job.prompt) + completion},
                    "spec": {"verify_steps": job.steps, "tau": job.emitted / max(1, job.steps)}}

        def _stream(self, job: Job, chat: bool):
            rid, sent = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:12]}", [""] * job.n

            def chunk(c: int, delta: dict, finish=None) -> dict:
                body = {"index": c, "finish_reason": finish}
                body.update({"delta": delta} if chat else {"text": delta.get("content", "")})
                return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                        "created": int(time.time()), "model": engine.model_name, "choices": [body]}

            def event(payload) -> None:
                if job.client_left:
                    return
                try:
                    self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    job.client_left = True  # the batch drops this request's rows at its next step

            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if chat:
                for c in range(job.n):
                    event(chunk(c, {"role": "assistant"}))
            engine.batcher.submit(job)
            while (item := job.events.get()) is not None:
                c, text = item
                if len(text) > len(sent[c]) and text.startswith(sent[c]):
                    event(chunk(c, {"content": text[len(sent[c]):]}))
                    sent[c] = text
            if job.error is not None:
                event({"error": {"message": f"internal error: {type(job.error).__name__}: {job.error}",
                                 "type": "server_error", "param": None, "code": None}})
            else:
                for c in range(job.n):
                    event(chunk(c, {}, job.finish_reason(c, engine.eos)))
            if not job.client_left:
                event_done = b"data: [DONE]\n\n"
                try:
                    self.wfile.write(event_done)
                    self.wfile.flush()
                except OSError:
                    pass

    return Handler


def build_server(engine: Engine, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(engine))
    server.daemon_threads = True
    return server


def run(cfg: RunConfig, presets: list[str]) -> None:
    from pathlib import Path

    from ..plugins import refused_in_server
    from .measure import load_pair
    from .strategies import eos_ids, strategy_params

    refused = refused_in_server(cfg.plugins.enabled)
    if refused:
        raise ConfigError(f"the server runs one drafter synchronously: plugins {' and '.join(refused)} are not "
                          "supported here yet (offload and subspec are)")
    base, speculate, _ = load_pair(cfg)
    drafter = speculate.drafter
    strategy = "tree" if cfg.inference.strategy in ("both", "all") else cfg.inference.strategy
    engine = Engine(base, drafter, strategy_params(cfg, strategy), eos_ids(base),
                    cfg.serve.model_name or Path(cfg.inference.drafter_path).name, cfg.serve.max_tokens_limit,
                    cfg.serve.default_max_tokens, cfg.serve.max_batch, cfg.serve.batch_wait_ms)
    save_resolved_config(cfg, Path(cfg.inference.output_dir), "serve", presets)
    server = build_server(engine, cfg.serve.host, cfg.serve.port)
    log.info(f"serving {engine.model_name} ({strategy}) on http://{cfg.serve.host}:{server.server_address[1]}/v1")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    run_entry("inference.server", __doc__.strip().splitlines()[0], run)
