"""Request batching for the server: requests that arrive within `serve.batch_wait_ms` of each other and can share a
sampler decode together as one ragged batch — the engine gives every row its own tree, accepted length and
max_tokens, so a batched greedy answer is the answer the request would get alone. Rows end early at a step boundary
when their client has gone or their stop string has appeared.

Which requests share a batch: every greedy request; sampled requests with the same temperature / top_p / draft mode
and no seed (a request that sets `seed` decodes alone, so the seed reproduces its answer).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from .accept import Sampling

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One request: `n` choices of the same prompt. The handler thread submits it and waits on `done` (or drains
    `events` when streaming); the batch thread fills texts / tokens / finish reasons."""

    prompt: list[int]
    max_tokens: int
    sampling: Sampling
    decode: Callable[[list[int]], str]  # new tokens → text
    n: int = 1
    stop: tuple[str, ...] = ()
    seeded: bool = False
    stream: bool = False
    client_left: bool = False  # set by the handler when a write fails
    gone: Callable[[], bool] = lambda: False  # checks the socket (non-streaming requests)
    texts: list[str] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    stopped: list[bool] = field(default_factory=list)
    steps: int = 0  # verify steps, summed over the choices
    emitted: int = 0  # tokens those steps emitted
    error: BaseException | None = None
    events: queue.Queue = field(default_factory=queue.Queue)  # (choice, visible text) … then None
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.texts, self.tokens, self.stopped = [""] * self.n, [[] for _ in range(self.n)], [False] * self.n
        self.holdback = max((len(s) for s in self.stop), default=1) - 1

    @property
    def key(self) -> tuple:
        s = self.sampling
        if s.greedy:
            return ("greedy",)
        return ("seeded", id(self)) if self.seeded else ("sampled", s.temperature, s.top_p, s.draft)

    def cancelled(self, choice: int) -> bool:
        return self.stopped[choice] or self.client_left or self.gone()

    def observe(self, choice: int, new_tokens: list[int], final: bool = False) -> None:
        """The choice's tokens so far: cut at the first stop string; streamed text holds back what could still
        become a stop string, and a trailing incomplete UTF-8 character."""
        if self.stopped[choice] and not final:
            return
        text = self.decode(new_tokens)
        cuts = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if cuts:
            text, self.stopped[choice] = text[:min(cuts)], True
        self.tokens[choice] = new_tokens
        self.texts[choice] = text
        if self.stream:
            visible = text if final or self.stopped[choice] else text[:max(0, len(text) - self.holdback)]
            if final or not visible.endswith("\ufffd"):
                self.events.put((choice, visible))

    def finish_reason(self, choice: int, eos: set[int]) -> str:
        new = self.tokens[choice]
        if self.stopped[choice] or (new and new[-1] in eos):
            return "stop"
        return "length" if len(new) >= self.max_tokens else "stop"

    def completion_tokens(self, choice: int) -> int:
        """Tokens up to the one that completed the stop string (all of them without one)."""
        new = self.tokens[choice]
        if not self.stopped[choice] or not self.stop:
            return len(new)
        for k in range(1, len(new) + 1):
            if any(s in self.decode(new[:k]) for s in self.stop):
                return k
        return len(new)


class Batcher:
    """One thread that takes the waiting jobs of one key (up to max_rows rows, waiting at most wait_s for more)
    and hands them to `run_batch(jobs)`; an exception fails that batch's jobs only."""

    def __init__(self, run_batch: Callable[[list[Job]], None], max_rows: int, wait_s: float):
        self.run_batch, self.max_rows, self.wait_s = run_batch, max_rows, wait_s
        self.waiting: deque[Job] = deque()
        self.cv = threading.Condition()
        self.stats = Counter()
        self.thread = threading.Thread(target=self._loop, name="specforge-het-batcher", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        with self.cv:
            self.waiting.append(job)
            self.stats["requests"] += 1
            self.cv.notify()

    def _rows_waiting(self, key) -> int:
        return sum(j.n for j in self.waiting if j.key == key)

    def take(self) -> list[Job]:
        with self.cv:
            while not self.waiting:
                self.cv.wait()
            key, deadline = self.waiting[0].key, time.monotonic() + self.wait_s
            while self._rows_waiting(key) < self.max_rows and (left := deadline - time.monotonic()) > 0:
                self.cv.wait(left)
            jobs, rows = [], 0
            for job in list(self.waiting):
                if job.key == key and (not jobs or rows + job.n <= self.max_rows):
                    jobs.append(job)
                    rows += job.n
                    self.waiting.remove(job)
            return jobs

    def _loop(self) -> None:
        while True:
            jobs = self.take()
            rows = sum(j.n for j in jobs)
            self.stats["batches"] += 1
            self.stats["rows"] += rows
            self.stats["max_rows"] = max(self.stats["max_rows"], rows)
            try:
                self.run_batch(jobs)
            except Exception as e:  # noqa: BLE001 — reported to each client as a 500, the server keeps serving
                log.exception("a batch of %d request(s) failed", len(jobs))
                for job in jobs:
                    job.error = e
            finally:
                for job in jobs:
                    if job.error is None and (job.client_left or job.gone()) and not all(job.stopped):
                        self.stats["cancelled"] += 1
                        self.stats["cancelled_tokens"] += sum(len(t) for t in job.tokens)
                    job.events.put(None)
                    job.done.set()
