"""Reading conversation files and turning them into (token ids, assistant loss mask).

Accepted JSONL rows (JSON arrays of rows work too):
  {"messages": [{"role": "user"|"assistant"|"system", "content": ...}, ...]}   OpenAI style
  {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}      ShareGPT
  {"turns": ["...", ...]}                                                       MT-bench questions (user turns)
  {"prompt": "..."} or a bare JSON string                                       one user turn
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..config.schema import ConfigError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "system": "system"}


@dataclass
class ReadReport:
    read: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in self.skipped.most_common()) or "none"
        return f"{self.read} conversations read; skipped: {skipped}"


def _normalise(row, where: str, report: ReadReport) -> list[dict] | None:
    if isinstance(row, str):
        return [{"role": "user", "content": row}]
    if not isinstance(row, dict):
        report.skipped["rows that are not objects"] += 1
        return None
    if "messages" in row:
        msgs = [{"role": m.get("role"), "content": m.get("content")} for m in row["messages"] if isinstance(m, dict)]
    elif "conversations" in row:
        msgs = []
        for m in row["conversations"]:
            role = SHAREGPT_ROLES.get(str(m.get("from", "")).lower()) if isinstance(m, dict) else None
            if role is None:
                report.skipped["turns with unknown roles"] += 1
                continue
            msgs.append({"role": role, "content": m.get("value")})
    elif "turns" in row:
        msgs = [{"role": "user", "content": row["turns"][0]}] if row["turns"] else []
    elif "prompt" in row:
        msgs = [{"role": "user", "content": row["prompt"]}]
    else:
        report.skipped["rows without messages/conversations/turns/prompt"] += 1
        return None
    good = [m for m in msgs if m["role"] in ("user", "assistant", "system")
            and isinstance(m["content"], str) and m["content"] != ""]
    if len(good) < len(msgs):
        report.skipped["empty or unknown-role turns"] += len(msgs) - len(good)
    return good or None


def read_conversations(path: str | Path, limit: int | None = None) -> tuple[list[list[dict]], ReadReport]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"conversation file {path} does not exist")
    report = ReadReport()
    text = path.read_text()
    if text.lstrip().startswith("["):
        try:
            rows = [(f"{path}[{i}]", r) for i, r in enumerate(json.loads(text))]
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"{path}:{n}", json.loads(line)))
            except json.JSONDecodeError:
                report.skipped["lines that are not JSON"] += 1
    out = []
    for where, row in rows:
        msgs = _normalise(row, where, report)
        if msgs is not None:
            out.append(msgs)
            report.read += 1
        if limit is not None and len(out) >= limit:
            break
    return out, report


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> tuple[list[int], list[int]] | None:
    """Token ids and a 0/1 mask that is 1 exactly on tokens of assistant turns.

    The assistant spans are found in characters — the text rendered up to a turn with the generation prompt
    vs. up to and including the turn — and mapped to tokens through the tokenizer's offsets. This works for
    any template whose renders are prefixes of each other (all common ones). None if the template is not so.
    """
    text = render(tokenizer, messages)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:k], add_generation_prompt=True) if k else ""
        upto = render(tokenizer, messages[: k + 1])
        if not (text.startswith(upto) and upto.startswith(before)):
            return None
        spans.append((len(before), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    # A token is an assistant token when its characters overlap an assistant span.
    mask = [int(any(start < b and end > a for a, b in spans)) for start, end in offsets]
    return ids[:max_length], mask[:max_length]


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a prompt: every turn up to the first assistant turn, plus the generation prompt."""
    first_user = []
    for m in messages:
        if m["role"] == "assistant":
            break
        first_user.append(m)
    return tokenizer(render(tokenizer, first_user, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
