"""Self-distillation: the base rewrites every assistant turn of a conversation set (what EAGLE-3 and SpecForge
recommend: a drafter learns the base's own distribution best from the base's own answers).

Turns are regenerated in order, so turn k's answer is conditioned on the regenerated turns before it.
Generation is batched (left padding) across conversations.
"""
from __future__ import annotations

import logging

import torch
from tqdm import tqdm

from .conversations import render

log = logging.getLogger(__name__)


class _StepBar:
    """A stopping criterion that never stops: it advances a progress bar by the rows still running at every
    decode step, so progress shows per token, not per batch."""

    def __init__(self, bar, eos: set[int]):
        self.bar, self.eos, self.running = bar, eos, None

    def __call__(self, input_ids, scores, **kwargs):
        last = input_ids[:, -1]
        done = torch.zeros_like(last, dtype=torch.bool)
        for t in self.eos:
            done |= last == t
        self.running = ~done if self.running is None else self.running & ~done
        if self.bar is not None:
            self.bar.update(int(self.running.sum()))
        return torch.zeros_like(last, dtype=torch.bool)


def _generation(base, max_new_tokens: int, temperature: float, top_p: float):
    from transformers import GenerationConfig

    tok = base.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = base.model.generation_config.eos_token_id or tok.eos_token_id
    eos_set = set(eos if isinstance(eos, list) else [eos])
    sample = temperature > 0
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, num_beams=1,
                               temperature=temperature if sample else None, top_p=top_p if sample else None,
                               eos_token_id=sorted(eos_set), pad_token_id=pad)
    return gen_cfg, pad, eos_set


def _generate_batch(base, prompts: list[list[int]], gen_cfg, pad: int, eos_set: set[int],
                    bar=None) -> list[tuple[list[int], bool]]:
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad, dtype=torch.long)
    attn = torch.zeros(len(prompts), T, dtype=torch.long)
    for r, p in enumerate(prompts):  # left padding: every prompt ends at column T-1
        ids[r, T - len(p):] = torch.tensor(p)
        attn[r, T - len(p):] = 1
    extra = {"stopping_criteria": [_StepBar(bar, eos_set)]} if bar is not None else {}
    gen = base.model.generate(input_ids=ids.to(base.device), attention_mask=attn.to(base.device),
                              generation_config=gen_cfg, **extra)[:, T:].tolist()
    out = []
    for new in gen:
        cut = next((j for j, t in enumerate(new) if t in eos_set), None)
        out.append((new, False) if cut is None else (new[:cut], True))
    return out


@torch.no_grad()
def complete_batch(base, prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float = 0.95,
                   seed: int = 0, bar=None) -> list[tuple[list[int], bool]]:
    """One left-padded generate call: each prompt's new token ids (up to and excluding EOS) and whether it ended
    with EOS (False: cut at max_new_tokens)."""
    gen_cfg, pad, eos_set = _generation(base, max_new_tokens, temperature, top_p)
    torch.manual_seed(seed)
    return _generate_batch(base, prompts, gen_cfg, pad, eos_set, bar)


@torch.no_grad()
def complete_marked(base, prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float = 0.95,
                    batch_size: int = 16, seed: int = 0, desc: str = "regenerating",
                    bar=None) -> list[tuple[list[int], bool]]:
    """Continue each prompt (token ids) in length-sorted batches: (new ids up to and excluding EOS, ended with
    EOS) per prompt. `bar`: a token progress bar advanced every decode step (else one bar of batches)."""
    gen_cfg, pad, eos_set = _generation(base, max_new_tokens, temperature, top_p)
    torch.manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    out: list = [None] * len(prompts)
    starts = range(0, len(order), batch_size)
    for s in (starts if bar is not None else tqdm(starts, desc=desc)):
        idx = order[s: s + batch_size]
        for i, res in zip(idx, _generate_batch(base, [prompts[i] for i in idx], gen_cfg, pad, eos_set, bar)):
            out[i] = res
    return out


def complete(base, prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float = 0.95,
             batch_size: int = 16, seed: int = 0, desc: str = "regenerating") -> list[list[int]]:
    """Continue each prompt (token ids); returns the new token ids up to and excluding EOS/padding."""
    return [ids for ids, _ in complete_marked(base, prompts, max_new_tokens, temperature, top_p, batch_size, seed,
                                              desc)]


def regenerate_conversations(base, conversations: list[list[dict]], max_new_tokens: int, temperature: float,
                             batch_size: int = 16, seed: int = 0, bar=None,
                             mark_truncated: bool = False) -> list[list[dict]]:
    """Replace every assistant turn with the base's own answer; conversations without any keep one
    generated answer after their last user turn. With `mark_truncated`, an answer cut at max_new_tokens is marked
    `"truncated": true` (training then does not teach the drafter to end the turn there)."""
    convs = [[dict(m) for m in c] for c in conversations]
    # Where to answer: each assistant turn's index, or the end for prompt-only conversations.
    slots = [[k for k, m in enumerate(c) if m["role"] == "assistant"] or [len(c)] for c in convs]
    for turn in range(max(len(s) for s in slots)):
        todo = [i for i, s in enumerate(slots) if turn < len(s)]
        prompts = []
        for i in todo:
            k = slots[i][turn]
            prompts.append(base.tokenizer(render(base.tokenizer, convs[i][:k], add_generation_prompt=True),
                                          add_special_tokens=False)["input_ids"])
        answers = complete_marked(base, prompts, max_new_tokens, temperature, batch_size=batch_size,
                                  seed=seed + turn, desc=f"regenerating turn {turn + 1}", bar=bar)
        for i, (ans, finished) in zip(todo, answers):
            k = slots[i][turn]
            msg = {"role": "assistant", "content": base.tokenizer.decode(ans, skip_special_tokens=True)}
            if mark_truncated and not finished:
                msg["truncated"] = True
            if k == len(convs[i]):
                convs[i].append(msg)
            else:
                convs[i][k] = msg
    return convs


def regenerate_to_file(base, conversations: list[list[dict]], out: str, fingerprint: dict, max_new_tokens: int,
                       temperature: float, batch_size: int = 16, seed: int = 0) -> list[list[dict]]:
    """`regenerate_conversations` in chunks appended to `out` as they finish (a killed run resumes at its last
    whole chunk; a finished file made from the same inputs is reused, one made from others is refused)."""
    from .resumable import ResumableJsonl

    job = ResumableJsonl(out, fingerprint, "data.regenerate_to")
    chunk = batch_size * 4
    if not job.finished:
        done = job.rows()
        job.start(len(done) // chunk * chunk)
        done = done[: len(done) // chunk * chunk]
        with tqdm(total=len(conversations), initial=len(done), unit="conv", desc="self-distill") as convs_bar, \
                tqdm(unit="tok", unit_scale=True, desc="answer tokens") as tok_bar:
            for s in range(len(done), len(conversations), chunk):
                part = regenerate_conversations(base, conversations[s: s + chunk], max_new_tokens, temperature,
                                                batch_size, seed + s, bar=tok_bar, mark_truncated=True)
                job.append([{"messages": c} for c in part])
                convs_bar.update(len(part))
        job.finish()
    convs = [r["messages"] for r in job.rows()]
    answers = [m for c in convs for m in c if m["role"] == "assistant"]
    cut = sum(bool(m.get("truncated")) for m in answers)
    log.info(f"self-distill: {len(convs)} conversations in {out}; {cut} of {len(answers)} answers cut at "
             f"{max_new_tokens} tokens (kept; their end-of-turn is not trained)")
    return convs
