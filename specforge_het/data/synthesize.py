"""synthesize: training prompts written by the base itself (Magpie: an aligned chat model, given only its chat
template's user-turn header, writes a user instruction), deduplicated, filtered and checked against held-out
benchmark prompts, so a drafter can be trained without any dataset from a hub.

    python -m specforge_het.synthesize --@smollm2 [--synth.num_prompts 2000] [--synth.time_budget_s 900]

Writes one {"prompt": ...} row per instruction to synth.out (resumable: a killed run continues after its last
batch; a finished file made from the same base and settings is reused). The rows are a conversation file for
data_gen's self-distillation (`--@self_distill`), which then writes the base's own answers.
"""
from __future__ import annotations

import logging
import re
import time

import torch
from tqdm import tqdm

from ..config.errors import ConfigError
from ..modeling.base import base_identity
from .conversations import render
from .heldout import HeldOut
from .regenerate import complete_batch
from .resumable import ResumableJsonl

log = logging.getLogger(__name__)
SENTINEL = "\u2063SPECFORGE_USER_TURN\u2063"


def user_header_ids(tokenizer) -> list[int]:
    """The token ids a user turn's text starts after: the chat template rendered up to the user content (with the
    template's default system turn, as the model saw it in alignment)."""
    text = render(tokenizer, [{"role": "user", "content": SENTINEL}])
    cut = text.find(SENTINEL)
    if cut < 0:
        raise ConfigError("synthesize: the chat template does not render a user turn's content verbatim")
    return tokenizer(text[:cut], add_special_tokens=False)["input_ids"]


def user_turn_starts(tokenizer, openers: list[str]) -> list[tuple[list[int], list[int]]]:
    """(opener ids, ids the base continues) per opener: the user-turn header, then the opener's tokens (tokenized
    apart from the header, so the header's ids stay exactly the template's). No openers: the header alone."""
    header = user_header_ids(tokenizer)
    if not openers:
        return [([], header)]
    bad = [o for o in openers if not o.strip()]
    if bad:
        raise ConfigError(f"synth.openers: expected non-empty texts, got {bad!r}")
    return [(ids, header + ids) for ids in (tokenizer(o, add_special_tokens=False)["input_ids"] for o in openers)]


def clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def dedup_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def keep_reason(text: str, finished: bool, min_words: int, seen: set[str], heldout: HeldOut) -> str | None:
    """Why an instruction is dropped (None: kept)."""
    if not finished:
        return "cut at synth.max_prompt_tokens"
    words = text.split()
    if len(words) < min_words:
        return f"fewer than {min_words} words"
    if "<|" in text or "|>" in text:
        return "template tokens in the text"
    if dedup_key(text) in seen:
        return "duplicate"
    if heldout.leaks(text):
        return "overlaps a held-out benchmark prompt"
    return None


@torch.no_grad()
def synthesize(base, cfg) -> ResumableJsonl:
    s = cfg.synth
    heldout = HeldOut.from_config(cfg)
    fingerprint = {"base": base_identity(base), "num_prompts": s.num_prompts, "max_prompt_tokens": s.max_prompt_tokens,
                   "temperature": s.temperature, "top_p": s.top_p, "min_words": s.min_words, "seed": s.seed,
                   "batch_size": s.batch_size, "heldout": heldout.fingerprint}
    if s.openers:  # only when set, so files written before openers existed keep their fingerprint
        fingerprint["openers"] = list(s.openers)
    job = ResumableJsonl(s.out, fingerprint, "synthesize")
    if job.finished:
        log.info(f"synthesize: reusing {s.out} ({len(job.rows())} prompts)")
        return job
    rows = job.rows()
    if rows and sum(r["batch"] == rows[-1]["batch"] for r in rows) != rows[-1]["of"]:
        rows = [r for r in rows if r["batch"] != rows[-1]["batch"]]  # a batch cut by a kill is redone whole
    done_batches = rows[-1]["batch"] + 1 if rows else 0
    job.start(len(rows))
    seen = {dedup_key(r["prompt"]) for r in rows}
    starts = user_turn_starts(base.tokenizer, s.openers)
    row_starts = [starts[i % len(starts)] for i in range(s.batch_size)]  # the same openers in every batch
    dropped: dict[str, int] = {}
    t0, batch = time.time(), done_batches
    with tqdm(total=s.num_prompts, initial=len(rows), unit="prompt", desc="synthesize") as bar:
        while len(rows) < s.num_prompts:
            if s.time_budget_s and time.time() - t0 > s.time_budget_s:
                log.info(f"synthesize: time budget of {s.time_budget_s:.0f} s reached at {len(rows)} prompts")
                break
            texts = complete_batch(base, [ids for _, ids in row_starts], s.max_prompt_tokens, s.temperature,
                                   s.top_p, seed=s.seed * 1_000_003 + batch)
            new = []
            for (opener_ids, _), (ids, finished) in zip(row_starts, texts):  # decoded whole: the base's spacing
                text = clean(base.tokenizer.decode(opener_ids + ids, skip_special_tokens=True))
                why = keep_reason(text, finished, s.min_words, seen, heldout)
                if why:
                    dropped[why] = dropped.get(why, 0) + 1
                    continue
                seen.add(dedup_key(text))
                new.append({"prompt": text, "batch": batch})
            new = [{**r, "of": len(new[: s.num_prompts - len(rows)])} for r in new[: s.num_prompts - len(rows)]]
            job.append(new)
            rows += new
            bar.update(len(new))
            bar.set_postfix(dropped=sum(dropped.values()))
            batch += 1
    if not rows:
        raise ConfigError(f"synthesize: no instruction survived the filters (dropped: {dropped})")
    log.info(f"synthesize: {len(rows)} prompts → {s.out}; dropped this run: "
             + (", ".join(f"{n} {why}" for why, n in sorted(dropped.items(), key=lambda kv: -kv[1])) or "none"))
    job.finish()
    return job
