"""Held-out prompts must never reach training data: the benchmark question files of a run (MT-bench, both turns;
HumanEval; GSM8K), its inference prompts and `synth.heldout` files, and a check that flags any text sharing a
long word n-gram with one of them (or equal to one after normalisation)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.paths import resolve_path
from .conversations import read_conversations

NGRAM = 8  # words: long enough that common phrases ("what is the capital of") do not count as a leak


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _ngrams(words: list[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def question_texts(path: str) -> list[str]:
    """Every user turn of a question / conversation file (MT-bench rows give both turns)."""
    import json

    texts = []
    convs, _ = read_conversations(path)
    for c in convs:
        texts += [m["content"] for m in c if m["role"] == "user"]
    # read_conversations keeps only an MT-bench row's first turn as a prompt: add the later turns
    for line in Path(path).read_text(encoding="utf-8").splitlines() if not path.endswith(".gz") else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("turns"), list):
            texts += [t for t in row["turns"][1:] if isinstance(t, str)]
    return texts


@dataclass
class HeldOut:
    files: list[str] = field(default_factory=list)
    exact: set[str] = field(default_factory=set)
    grams: set[tuple[str, ...]] = field(default_factory=set)

    @classmethod
    def from_files(cls, paths: list[str]) -> "HeldOut":
        paths = [resolve_path(p) for p in paths]
        held = cls(files=sorted(set(p for p in paths if p and Path(p).is_file())))
        for path in held.files:
            for text in question_texts(path):
                words = _words(text)
                held.exact.add(" ".join(words))
                held.grams |= _ngrams(words)
        return held

    @classmethod
    def from_config(cls, cfg) -> "HeldOut":
        b = cfg.benchmark
        return cls.from_files([b.mt_bench, b.humaneval, b.gsm8k, cfg.inference.prompts, *cfg.synth.heldout])

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for path in self.files:
            h.update(Path(path).read_bytes())
        return h.hexdigest()[:16]

    def leaks(self, text: str) -> bool:
        words = _words(text)
        if " ".join(words) in self.exact:
            return True
        return bool(self.grams) and not self.grams.isdisjoint(_ngrams(words))

    def count_leaks(self, texts: list[str]) -> int:
        return sum(self.leaks(t) for t in texts)
