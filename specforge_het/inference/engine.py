"""Speculative decoding with a drafter over a frozen base (batched, greedy or sampled), and the base-only baseline.

Per iteration (`decode_batch`): propose → verify → accept → commit. The proposer (inference/proposers/, one file
per drafting method) drafts one tree per sequence; the base verifies all trees in one forward (tree attention masks
+ tree position ids); the verifier (verify.py) picks each row's accepted path; that path is compacted into the base's
KV cache and handed to the proposer. Sequences accept different lengths: the caches carry a validity mask per slot,
and position ids count real tokens only.

Two cache layouts, the same tokens: HF DynamicCaches that grow by the longest accepted path each step (the
default), or with `base.static_cache` pre-allocated SlotCaches (slot_cache.py) whose shapes never change while the
batch keeps its rows — what compiled graphs and CUDA graphs need. No step reads the device to size anything until
the accepted tokens are handed to the host at its end (the dynamic layout also reads the longest path's length).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..modeling.masks import padded_causal_mask
from .accept import Sampling, sampling_probs, take
from .kv_cache import commit_paths, full_cache, select_rows
from .proposers import build_proposer
from .slot_cache import SlotCache, kept_valid, slot_capacity, started
from .tree import ancestor_matrix, tree_attention_mask
from .verify import verifier_for


@dataclass
class DecodeResult:
    tokens: list[int]  # prompt + new tokens (truncated at max_new_tokens / EOS)
    new_tokens: int = 0
    steps: int = 0  # base verify forwards after the prefill
    accepted: list[int] = field(default_factory=list)  # draft tokens accepted per step
    seconds: float = 0.0  # wall time of its batch ÷ batch size (summing over prompts gives the wall time)
    iteration_seconds: list[float] = field(default_factory=list)  # per verify step of its batch

    @property
    def emitted(self) -> int:
        return sum(self.accepted) + self.steps


def left_pad(prompts: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ragged prompts → (ids [B, T], valid [B, T], position ids [B, T]), padded on the left so every row's last
    token sits in the last column. Padding slots stay in the caches, masked out, for the whole generation."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, device=device)
        valid[i, width - len(p):] = True
    return ids, valid, (valid.long().cumsum(1) - 1).clamp_min(0)


def finished(tokens: list[int], prompt_len: int, max_new: int, eos: set[int]) -> bool:
    new = tokens[prompt_len:]
    return len(new) >= max_new or any(t in eos for t in new)


def truncate(new_tokens: list[int], max_new: int, eos: set[int]) -> list[int]:
    out = []
    for t in new_tokens[:max_new]:
        out.append(t)
        if t in eos:
            break
    return out


def next_tokens_of(logits: torch.Tensor, sampling: Sampling, gen) -> torch.Tensor:
    """[B, V] last-position logits → [B] next tokens (argmax, or one sample per row)."""
    if sampling.greedy:
        return logits.argmax(-1)
    return torch.multinomial(sampling_probs(logits, sampling.temperature, sampling.top_p), 1, generator=gen)[:, 0]


class _Rows:
    """Book-keeping of a batch whose rows finish at different times: results per original prompt, the
    live rows' original indices, and the batch wall time shared out over the prompts at the end. max_new is one
    limit per prompt; cancelled(prompt index) → True stops a row early (a client gone, a stop string seen)."""

    def __init__(self, prompts, max_new: list[int], eos, cancelled=None):
        self.prompts, self.max_new, self.eos, self.cancelled = prompts, max_new, eos, cancelled
        self.results = [DecodeResult(tokens=list(p)) for p in prompts]
        self.live = list(range(len(prompts)))
        self.t0 = time.perf_counter()

    def emit(self, i: int, new: list[int], accepted: int | None, seconds: float | None) -> None:
        r = self.results[self.live[i]]
        r.tokens.extend(new)
        if accepted is not None:
            r.steps += 1
            r.accepted.append(accepted)
            r.iteration_seconds.append(seconds)

    def new_tokens(self, r: int) -> list[int]:
        return truncate(self.results[r].tokens[len(self.prompts[r]):], self.max_new[r], self.eos)

    def done(self) -> torch.Tensor | None:
        """Drop finished rows; → the kept rows' current batch indices (None when nothing changed)."""
        keep = [i for i, r in enumerate(self.live)
                if not finished(self.results[r].tokens, len(self.prompts[r]), self.max_new[r], self.eos)
                and not (self.cancelled is not None and self.cancelled(r))]
        if len(keep) == len(self.live):
            return None
        self.live = [self.live[i] for i in keep]
        return torch.tensor(keep, dtype=torch.long)

    def close(self) -> list[DecodeResult]:
        wall = time.perf_counter() - self.t0
        for r, (p, res) in enumerate(zip(self.prompts, self.results)):
            res.seconds = wall / len(self.prompts)  # so that summing over prompts gives the wall time
            res.tokens = list(p) + self.new_tokens(r)
            res.new_tokens = len(res.tokens) - len(p)
        return self.results


def per_row(max_new_tokens: int | list[int], n: int) -> list[int]:
    return list(max_new_tokens) if isinstance(max_new_tokens, (list, tuple)) else [max_new_tokens] * n


def new_cache(base, prompt_width: int, max_new_tokens: int, scratch: int):
    """The base's cache for one batch decode: a SlotCache when `base.static_cache` (scratch: the most entries one
    step writes), else a DynamicCache."""
    length = prompt_width + max_new_tokens + scratch
    cache = full_cache(base, length)  # checks the sliding window either way
    if getattr(base, "static_cache", False):
        return SlotCache(slot_capacity(prompt_width, max_new_tokens, scratch), scratch)
    return cache


def base_decode_batch(base, prompts: list[list[int]], max_new_tokens: int, eos: set[int],
                      sampling: Sampling = Sampling()) -> list[DecodeResult]:
    """Plain one-token-per-forward decoding of a left-padded batch with a KV cache (greedy or sampled): the
    reference and speed baseline. Finished rows leave the batch."""
    dev = base.device
    gen = sampling.generator(dev)
    rows = _Rows(prompts, per_row(max_new_tokens, len(prompts)), eos)
    ids, valid, pos = left_pad(prompts, dev)
    cache = new_cache(base, ids.shape[1], max(rows.max_new), scratch=1)
    _, logits = base.forward(ids, attention_mask=padded_causal_mask(valid, None, base.dtype), position_ids=pos,
                             past_key_values=cache)
    nxt = next_tokens_of(logits[:, -1], sampling, gen)
    for i, t in enumerate(nxt.tolist()):
        rows.emit(i, [t], None, None)
    lens = valid.sum(1)
    valid = started(cache, valid)
    while (keep := rows.done()) is None or keep.numel():
        if keep is not None:
            keep = keep.to(dev)
            select_rows(cache, keep)
            nxt, valid, lens = nxt[keep], kept_valid(cache, valid, keep), lens[keep]
        ti = time.perf_counter()
        step_valid = torch.ones(len(rows.live), 1, dtype=torch.bool, device=dev)
        _, logits = base.forward(nxt[:, None], attention_mask=padded_causal_mask(step_valid, valid, base.dtype),
                                 position_ids=lens[:, None], past_key_values=cache)
        if isinstance(cache, SlotCache):
            cache.commit(torch.zeros_like(step_valid, dtype=torch.long), step_valid)
        else:
            valid = torch.cat([valid, step_valid], 1)
        lens = lens + 1
        nxt = next_tokens_of(logits[:, -1], sampling, gen)
        host = nxt.tolist()
        seconds = time.perf_counter() - ti
        for i, t in enumerate(host):
            rows.emit(i, [t], 0, seconds)
    return rows.close()


def base_decode(base, prompt: list[int], max_new_tokens: int, eos: set[int],
                sampling: Sampling = Sampling()) -> DecodeResult:
    return base_decode_batch(base, [prompt], max_new_tokens, eos, sampling)[0]


@torch.no_grad()
def speculative_decode_batch(base, drafter, prompts: list[list[int]], max_new_tokens: int | list[int],
                             eos: set[int], depth: int, top_k: int, total_tokens: int, sampling: Sampling = Sampling(),
                             on_tokens=None, best_first: bool = False,
                             force_accept: bool = False, drafting=None, cancelled=None) -> list[DecodeResult]:
    """Speculative decoding of a left-padded batch with the drafter's proposer (proposers/) shaped as a chain, an
    EAGLE-2 tree or a budget tree (depth, top_k, total_tokens, best_first). Greedy: every row token-identical to
    `base_decode`. Sampling: recursive rejection sampling per row, distributed exactly as base sampling.
    on_tokens(prompt index, new tokens so far): called after the prefill and after every verify step (truncated at
    max_new_tokens / EOS), for streaming. max_new_tokens: one limit, or one per prompt; cancelled(prompt index) →
    True ends that row at the next step boundary (the server: client gone, stop string).
    force_accept (timing benchmarks only — the output is NOT the base's): every verify step accepts the path to
    its tree's deepest node, so a random-weight base can be timed at full depth.
    drafting: an asynchronous drafting plugin (plugins/async_draft.py, batch 1) wrapping the proposer."""
    proposer = build_proposer(drafter, depth, top_k, total_tokens, best_first)
    if drafting is not None:
        if len(prompts) != 1:
            raise ValueError("asynchronous drafting decodes one sequence at a time (inference.batch_size 1)")
        proposer = drafting.wrap(proposer)
    return decode_batch(base, proposer, prompts, max_new_tokens, eos, verifier_for(sampling, force_accept), sampling,
                        on_tokens, cancelled)


def decode_batch(base, proposer, prompts: list[list[int]], max_new_tokens: int | list[int], eos: set[int],
                 verify, sampling: Sampling = Sampling(), on_tokens=None, cancelled=None) -> list[DecodeResult]:
    """propose → verify → accept → commit, each row with its own accepted length. Slots of rejected nodes are not
    kept; a row that accepts fewer nodes than the longest row of its step leaves masked padding slots behind in the
    caches (positions count real tokens only)."""
    dev = base.device
    gen = sampling.generator(dev)
    rows = _Rows(prompts, per_row(max_new_tokens, len(prompts)), eos, cancelled)
    ids, prompt_valid, pos = left_pad(prompts, dev)
    base_cache = new_cache(base, ids.shape[1], max(rows.max_new), scratch=proposer.max_nodes + 1)
    hidden, logits = base.forward(ids, attention_mask=padded_causal_mask(prompt_valid, None, base.dtype),
                                  position_ids=pos, past_key_values=base_cache, feature_layers=proposer.feature_layers)
    root = next_tokens_of(logits[:, -1], sampling, gen)
    proposer.start(hidden, ids, root, pos, prompt_valid, base_cache)
    root_pos = prompt_valid.sum(1)
    base_valid = started(base_cache, prompt_valid)
    static = isinstance(base_cache, SlotCache)
    for i, t in enumerate(root.tolist()):
        rows.emit(i, [t], None, None)

    def stream():
        if on_tokens is not None:
            for r in rows.live:
                on_tokens(r, rows.new_tokens(r))

    stream()
    while (keep := rows.done()) is None or keep.numel():
        if keep is not None:
            keep = keep.to(dev)
            select_rows(base_cache, keep)
            proposer.keep(keep)
            root, root_pos, base_valid = root[keep], root_pos[keep], kept_valid(base_cache, base_valid, keep)
        ti = time.perf_counter()
        tree = proposer.propose(root, root_pos, sampling, gen)
        anc = ancestor_matrix(tree.parents)
        hidden, logits = base.forward(tree.tokens, attention_mask=tree_attention_mask(anc, base_valid, base.dtype),
                                      position_ids=root_pos[:, None] + tree.depths, past_key_values=base_cache,
                                      feature_layers=proposer.feature_layers)
        paths, lens, bonus = verify(tree, anc, logits, gen)
        # Commit: the base cache keeps the accepted path's slots; the proposer consumes the path.
        if static:  # in place, fixed shapes: paths keep the tree's static width
            base_cache.commit(paths, torch.arange(paths.shape[1], device=dev)[None] < lens[:, None])
        else:  # the growing cache grows by the longest accepted path only
            paths = paths[:, : int(lens.max())]
            base_len, width = base_valid.shape[1], paths.shape[1]
            commit_paths(base_cache, base_len, paths)
            base_valid = torch.cat([base_valid, torch.arange(width, device=dev)[None] < lens[:, None]], 1)
        # Row b's next tokens along its path: the accepted children, then the bonus token.
        nxt = tree.tokens.gather(1, torch.cat([paths[:, 1:], paths[:, -1:]], 1))
        nxt.scatter_(1, (lens - 1)[:, None], bonus[:, None])
        proposer.commit(take(hidden, paths), nxt, lens)
        root, root_pos = bonus, root_pos + lens
        host = torch.cat([lens[:, None], nxt], 1).tolist()  # the step's one read of the device, before timing it
        seconds = time.perf_counter() - ti
        for i, (n, *row) in enumerate(host):
            rows.emit(i, row[:n], n - 1, seconds)
        stream()
    return rows.close()


def speculative_decode(base, drafter, prompt: list[int], max_new_tokens: int, eos: set[int],
                       depth: int, top_k: int, total_tokens: int, sampling: Sampling = Sampling(),
                       on_tokens=None, best_first: bool = False) -> DecodeResult:
    """One sequence (batch 1); on_tokens(new tokens so far) for streaming."""
    stream = None if on_tokens is None else (lambda _, new: on_tokens(new))
    return speculative_decode_batch(base, drafter, [prompt], max_new_tokens, eos, depth, top_k, total_tokens,
                                    sampling, stream, best_first)[0]


@torch.no_grad()
def hf_greedy(base, prompt: list[int], max_new_tokens: int, eos: set[int]) -> list[int]:
    """Reference output from transformers' own `generate`, forced to plain greedy (a model's shipped
    generation_config may sample or penalise repeats): the lossless check compares to this."""
    from transformers import GenerationConfig

    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                               eos_token_id=sorted(eos) or None, pad_token_id=min(eos) if eos else 0)
    out = base.model.generate(torch.tensor([prompt], device=base.device), generation_config=gen_cfg,
                              attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=base.device))
    return list(prompt) + truncate(out[0, len(prompt):].tolist(), max_new_tokens, eos)
