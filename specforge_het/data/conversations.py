"""Reading conversation files and turning them into (token ids, assistant loss mask).

Accepted JSONL rows (JSON arrays of rows work too):
  {"messages": [{"role": "user"|"assistant"|"system", "content": ...}, ...]}   OpenAI style
  {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}      ShareGPT
  {"turns": ["...", ...]}                                                       MT-bench questions (user turns)
  {"prompt": "..."} or a bare JSON string                                       one user turn
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config.errors import ConfigError
from ..utils.io import read_text
from .sources import is_datasets_source, iter_rows

log = logging.getLogger(__name__)
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "system": "system"}


@dataclass
class ReadReport:
    read: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in self.skipped.most_common()) or "none"
        return f"{self.read} conversations read; skipped: {skipped}"


def _turns(value, where: str, key: str, item: str) -> list:
    """A row's list field, or one clear error naming the file, line and field."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: field {key!r} must be a list of {item}, got {_kind(value)}")
    return value


def _kind(value) -> str:
    return "null" if value is None else f"{type(value).__name__} {json.dumps(value)[:40]}"


def _normalise(row, where: str, report: ReadReport) -> list[dict] | None:
    """One row → its turns as {role, content} messages (None: dropped, and counted). A row of a known form whose
    fields have the wrong types is a malformed file: one error naming the file, line and field."""
    if isinstance(row, str):
        return [{"role": "user", "content": row}] if row else None
    if not isinstance(row, dict):
        report.skipped["rows that are not objects"] += 1
        return None
    if "messages" in row:
        msgs = []
        for m in _turns(row["messages"], where, "messages", "{role, content} objects"):
            if not isinstance(m, dict):
                raise ConfigError(f"{where}: each of 'messages' must be a {{role, content}} object, got {_kind(m)}")
            msgs.append({"role": m.get("role"), "content": m.get("content")})
    elif "conversations" in row:
        msgs = []
        for m in _turns(row["conversations"], where, "conversations", "{from, value} objects"):
            if not isinstance(m, dict):
                raise ConfigError(f"{where}: each of 'conversations' must be a {{from, value}} object, got {_kind(m)}")
            role = SHAREGPT_ROLES.get(str(m.get("from", "")).lower())
            if role is None:
                report.skipped["turns with unknown roles"] += 1
                continue
            msgs.append({"role": role, "content": m.get("value")})
    elif "turns" in row:
        turns = _turns(row["turns"], where, "turns", "user-turn strings")
        msgs = [{"role": "user", "content": turns[0]}] if turns else []
    elif "prompt" in row:  # HumanEval-style
        msgs = [{"role": "user", "content": row["prompt"]}]
    elif "question" in row:  # GSM8K-style {"question", "answer"}: the question is the prompt
        msgs = [{"role": "user", "content": row["question"]}]
    else:
        report.skipped["rows without messages/conversations/turns/prompt/question"] += 1
        return None
    for m in msgs:
        if m["content"] is not None and not isinstance(m["content"], str):
            raise ConfigError(f"{where}: a turn's content must be a string, got {_kind(m['content'])}")
    if "messages" in row:  # our own self-distilled files mark answers cut at the token cap
        for m, src in zip(msgs, row["messages"]):
            if m["role"] == "assistant" and src.get("truncated") is True:
                m["truncated"] = True
    good = [m for m in msgs if m["role"] in ("user", "assistant", "system") and m["content"]]
    if len(good) < len(msgs):
        report.skipped["empty or unknown-role turns"] += len(msgs) - len(good)
    if not good:
        report.skipped["rows with no non-empty turn"] += 1
    return good or None


def normalise_row(row, where: str) -> list[dict] | None:
    """One row of any accepted form → its {role, content} turns (None: nothing usable)."""
    return _normalise(row, where, ReadReport())


def read_conversations(path: str | Path, limit: int | None = None) -> tuple[list[list[dict]], ReadReport]:
    """Every conversation of a JSONL file (or a JSON array; gzip-compressed when the name ends in .gz) — or of any
    `datasets` source (sources.py: parquet / arrow / CSV files or folders, save_to_disk folders, hub ids), streamed
    up to `limit` — with the rows it dropped counted by reason."""
    report = ReadReport()
    if is_datasets_source(str(path)):
        return _collect(iter_rows(str(path)), report, limit)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"conversation file {path} does not exist")
    text = read_text(path)
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
    return _collect(rows, report, limit)


def _collect(rows, report: ReadReport, limit: int | None) -> tuple[list[list[dict]], ReadReport]:
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


def _special_strings(tokenizer) -> list[str]:
    specials = set(tokenizer.all_special_tokens)
    specials.update(t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special)
    return sorted((s for s in specials if s), key=len, reverse=True)


def assistant_char_spans(tokenizer, messages: list[dict], text: str) -> list[tuple[int, int]] | None:
    """Character spans of the assistant turns in the rendered `text`, found in order.

    Each turn's content (or its stripped content, or the part after `</think>` for templates that drop
    reasoning from the history) is located after the previous turn, and the span is extended over a special
    token that immediately follows it (<|eot_id|>, <|im_end|>,
    eos): the drafter must learn to predict the end of a turn. Template text around a turn (role headers,
    an inserted empty <think> block) stays outside the mask. None when a turn cannot be found verbatim.
    """
    specials = _special_strings(tokenizer)
    pos, spans = 0, []
    for m in messages:
        content = m["content"]
        found = -1
        # Templates may trim a turn, or (reasoning models) drop its <think>…</think> part from the history.
        candidates = [content, content.strip()]
        if "</think>" in content:
            candidates.append(content.split("</think>")[-1].strip())
        for cand in candidates:
            if cand and (found := text.find(cand, pos)) >= 0:
                break
        if found < 0:
            if m["role"] == "assistant":
                return None
            continue  # a template may rewrite a system/user turn; it is not trained on anyway
        end = found + len(cand)
        if m["role"] == "assistant":
            if not m.get("truncated"):  # a turn cut at a token cap did not end there: its end is not learned
                end += next((len(sp) for sp in specials if text.startswith(sp, end)), 0)
            spans.append((found, end))
        pos = end
    return spans


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> tuple[list[int], list[int]] | None:
    """Token ids and a 0/1 mask that is 1 exactly on the tokens of assistant turns.

    A template that marks assistant text with `{% generation %}` is taken at its word (HF's own
    assistant-token mask); otherwise the turns are located in the rendered text (`assistant_char_spans`)
    and mapped to tokens through the tokenizer's offsets. None if a turn cannot be located. A turn marked
    `truncated` (cut at a generation cap) is trained on without the end-of-turn token after it.
    """
    if GENERATION_TAG.search(tokenizer.chat_template or ""):
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    else:
        text = render(tokenizer, messages)
        spans = assistant_char_spans(tokenizer, messages, text)
        if spans is None:
            return None
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        # A token is an assistant token when its characters overlap an assistant span.
        mask = [int(any(start < b and end > a for a, b in spans)) for start, end in enc["offset_mapping"]]
    return ids[:max_length], mask[:max_length]


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a prompt: every turn up to the first assistant turn, plus the generation prompt."""
    first_user = []
    for m in messages:
        if m["role"] == "assistant":
            break
        first_user.append(m)
    return tokenizer(render(tokenizer, first_user, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def set_chat_template(tokenizer, path: str | None) -> None:
    """Replace the tokenizer's chat template with the Jinja file at `path` (data.chat_template)."""
    if path is None:
        return
    if not Path(path).is_file():
        raise ConfigError(f"data.chat_template: no template file at {path}")
    tokenizer.chat_template = Path(path).read_text()


def tokenize_all(tokenizer, convs: list[list[dict]], max_length: int, who: str,
                 source: str | None = None) -> list[tuple[list[int], list[int]]]:
    """Tokenize and mask every conversation; what is dropped or cut is counted and reported. No sample left to
    train on (an empty file, no assistant turn anywhere) is an error naming `source`."""
    samples, no_assistant, unlocated, truncated = [], 0, 0, 0
    for msgs in convs:
        enc = tokenize_conversation(tokenizer, msgs, 1 << 30)
        if enc is None:
            unlocated += 1
            continue
        truncated += len(enc[0]) > max_length
        ids, mask = enc[0][:max_length], enc[1][:max_length]
        if sum(mask) == 0:
            no_assistant += 1
        else:
            samples.append((ids, mask))
    summary = (f"{len(samples)} samples kept; {truncated} truncated to {max_length} tokens, {no_assistant} "
               f"without assistant tokens (after truncation), {unlocated} whose assistant turns the chat template "
               "does not render verbatim")
    log.info("%s: %s", who, summary)
    if not samples:
        raise ConfigError(f"{source or who}: no conversation with an assistant turn to train on ({len(convs)} "
                          f"conversations read; {summary})")
    return samples


class TokenizedConversations(torch.utils.data.Dataset):
    """Token ids + loss masks only: online training computes the base's hidden states per batch."""

    def __init__(self, samples: list[tuple[list[int], list[int]]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> dict:
        ids, mask = self.samples[idx]
        return {"input_ids": torch.tensor(ids), "loss_mask": torch.tensor(mask)}
