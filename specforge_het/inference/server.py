"""An OpenAI-compatible HTTP server on the speculative decoding engine.

    python -m specforge_het.inference.server --@demo --@eagle2 [--serve.port 8000] [--inference.drafter_path DIR]

Endpoints: POST /v1/chat/completions (also `"stream": true`, server-sent events), POST /v1/completions,
GET /v1/models, GET /health. Responses carry the usual `usage` plus `spec` (verify steps, τ). Malformed requests get a
4xx JSON error `{"error": {"message", "type", "param"}}`. The engine decodes one request at a time (batch 1);
concurrent requests wait their turn. Greedy (temperature 0, the default) output is token-identical to the base's.
"""
from __future__ import annotations

import logging
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..config import RunConfig, run_entry, save_resolved_config
from ..config.schema import ConfigError
from ..data.conversations import render
from .engine import Sampling, speculative_decode

log = logging.getLogger(__name__)


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


class Engine:
    """The base + drafter pair behind a lock, with the request-level checks."""

    def __init__(self, base, drafter, params: dict, eos: set[int], model_name: str, max_tokens_limit: int,
                 default_max_tokens: int):
        self.base, self.drafter, self.params, self.eos = base, drafter, params, eos
        self.model_name, self.limit, self.default_max = model_name, max_tokens_limit, default_max_tokens
        self.lock = threading.Lock()

    def sampling(self, body: dict) -> Sampling:
        try:
            temperature, top_p = float(body.get("temperature", 0.0)), float(body.get("top_p", 1.0))
            return Sampling(temperature, top_p, int(body.get("seed", 0)))
        except (TypeError, ValueError) as e:
            raise RequestError(400, f"bad sampling parameters: {e}", "temperature") from None

    def max_tokens(self, body: dict) -> int:
        value = body.get("max_tokens", body.get("max_completion_tokens", self.default_max))
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RequestError(400, f"max_tokens must be a positive integer, got {value!r}", "max_tokens")
        if value > self.limit:
            raise RequestError(400, f"max_tokens {value} exceeds this server's limit of {self.limit}", "max_tokens")
        return value

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

    def generate(self, prompt: list[int], max_tokens: int, sampling: Sampling, on_tokens=None):
        with self.lock:
            return speculative_decode(self.base, self.drafter, prompt, max_tokens, self.eos, **self.params,
                                      sampling=sampling, on_tokens=on_tokens)


def _finish_reason(new_tokens: list[int], max_tokens: int, eos: set[int]) -> str:
    return "stop" if new_tokens and new_tokens[-1] in eos else ("length" if len(new_tokens) >= max_tokens else "stop")


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

        def _error(self, status: int, message: str, param=None) -> None:
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._json(status, {"error": {"message": message, "type": kind, "param": param}})

        def do_GET(self):
            if self.path == "/health":
                self._json(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": engine.model_name, "object": "model",
                                                             "owned_by": "specforge_het"}]})
            else:
                self._error(404, f"no route GET {self.path}")

        def do_POST(self):
            chat = self.path == "/v1/chat/completions"
            if not chat and self.path != "/v1/completions":
                return self._error(404, f"no route POST {self.path}")
            try:
                length = int(self.headers.get("Content-Length", "0"))
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except json.JSONDecodeError as e:
                    raise RequestError(400, f"request body is not valid JSON: {e}") from None
                if not isinstance(body, dict):
                    raise RequestError(400, "request body must be a JSON object")
                prompt, max_tokens = engine.prompt(body, chat), engine.max_tokens(body)
                sampling = engine.sampling(body)
                if body.get("stream"):
                    return self._stream(prompt, max_tokens, sampling, chat)
                res = engine.generate(prompt, max_tokens, sampling)
            except RequestError as e:
                return self._error(e.status, str(e), e.param)
            new = res.tokens[len(prompt):]
            text = engine.base.tokenizer.decode(new, skip_special_tokens=True)
            choice = {"index": 0, "finish_reason": _finish_reason(new, max_tokens, engine.eos)}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            self._json(200, {
                "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": engine.model_name, "choices": [choice],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(new),
                          "total_tokens": len(prompt) + len(new)},
                "spec": {"verify_steps": res.steps, "tau": res.emitted / max(1, res.steps)},
            })

        def _stream(self, prompt, max_tokens, sampling, chat):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            rid, sent = f"chatcmpl-{uuid.uuid4().hex[:12]}", [""]
            tok = engine.base.tokenizer

            def event(payload) -> None:
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

            def chunk(delta: dict, finish=None) -> dict:
                body = {"index": 0, "finish_reason": finish}
                body.update({"delta": delta} if chat else {"text": delta.get("content", "")})
                return {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                        "created": int(time.time()), "model": engine.model_name, "choices": [body]}

            def on_tokens(new_tokens: list[int], final: bool = False) -> None:
                text = tok.decode(new_tokens, skip_special_tokens=True)
                if text.endswith("\ufffd") and not final:  # maybe an incomplete multi-byte character: wait
                    return
                if len(text) > len(sent[0]) and text.startswith(sent[0]):
                    event(chunk({"content": text[len(sent[0]):]}))
                    sent[0] = text

            if chat:
                event(chunk({"role": "assistant"}))
            res = engine.generate(prompt, max_tokens, sampling, on_tokens)
            new = res.tokens[len(prompt):]
            on_tokens(new, final=True)
            event(chunk({}, _finish_reason(new, max_tokens, engine.eos)))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

    return Handler


def build_server(engine: Engine, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(engine))
    server.daemon_threads = True
    return server


def run(cfg: RunConfig, presets: list[str]) -> None:
    from pathlib import Path

    from .measure import eos_ids, load_pair, strategy_params

    if {"router", "async_draft"} & set(cfg.plugins.enabled):
        raise ConfigError("the server runs one drafter synchronously: plugins router and async_draft are not "
                          "supported here yet (offload and subspec are)")
    base, speculate, _ = load_pair(cfg)
    drafter = speculate.drafter
    strategy = "tree" if cfg.inference.strategy in ("both", "all") else cfg.inference.strategy
    engine = Engine(base, drafter, strategy_params(cfg, strategy), eos_ids(base),
                    cfg.serve.model_name or Path(cfg.inference.drafter_path).name, cfg.serve.max_tokens_limit,
                    cfg.serve.default_max_tokens)
    save_resolved_config(cfg, Path(cfg.inference.output_dir), "serve", presets)
    server = build_server(engine, cfg.serve.host, cfg.serve.port)
    log.info(f"serving {engine.model_name} ({strategy}) on http://{cfg.serve.host}:{server.server_address[1]}/v1")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    run_entry("inference.server", __doc__.strip().splitlines()[0], run)
