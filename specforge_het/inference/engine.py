"""Speculative decoding with a drafter over a frozen base (batched, greedy or sampled), and the base-only baseline.

Per iteration: the drafter builds one tree per sequence from its last feature; the base verifies all trees in one
forward (tree attention masks + tree position ids); each sequence's accepted path is compacted into the KV cache;
the drafter consumes the base's features of the accepted paths and crops its own tree entries. Sequences accept
different lengths: the caches carry a validity mask per slot, and position ids count real tokens only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from ..modeling.drafter_base import padded_causal_mask
from .accept import Sampling, greedy_accept, path_indices, sample_accept, sampling_probs, take
from .tree import ancestor_matrix, expand_tree, tree_attention_mask


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


def full_cache(base=None, length: int = 0) -> DynamicCache:
    """A cache of plain full-attention layers. HF would give sliding-window families (Mistral, Gemma) rolling
    layers that drop old entries and count positions themselves, which tree compaction cannot edit; full layers
    are exact as long as the sequence stays inside the window, which is checked here."""
    window = base.sliding_window if base is not None else None
    if window is not None and length > window:
        raise ValueError(f"prompt + max_new_tokens = {length} exceeds the base's sliding window ({window}); "
                         "speculative decoding here is exact only within the window")
    return DynamicCache()


def gather_cache(cache: DynamicCache, keep: torch.Tensor) -> None:
    """Keep, per sequence, the cache slots keep [B, M] (in that order) in every layer of a DynamicCache."""
    for layer in cache.layers:
        idx = keep[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[-1])
        layer.keys = layer.keys.gather(2, idx)
        layer.values = layer.values.gather(2, idx)


def select_rows(cache: DynamicCache, rows: torch.Tensor) -> None:
    """Keep only the sequences `rows` of a batched DynamicCache (finished ones leave the batch)."""
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, rows)
        layer.values = layer.values.index_select(0, rows)


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Drop every slot from `length` on (the drafter's tree entries after a round)."""
    for layer in cache.layers:
        layer.keys = layer.keys[..., :length, :]
        layer.values = layer.values[..., :length, :]


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


def base_decode_batch(base, prompts: list[list[int]], max_new_tokens: int, eos: set[int],
                      sampling: Sampling = Sampling()) -> list[DecodeResult]:
    """Plain one-token-per-forward decoding of a left-padded batch with a KV cache (greedy or sampled): the
    reference and speed baseline. Finished rows leave the batch."""
    dev = base.device
    gen = sampling.generator(dev)
    rows = _Rows(prompts, per_row(max_new_tokens, len(prompts)), eos)
    ids, valid, pos = left_pad(prompts, dev)
    cache = full_cache(base, ids.shape[1] + max(rows.max_new))
    _, logits = base.forward(ids, attention_mask=padded_causal_mask(valid, None, base.dtype), position_ids=pos,
                             past_key_values=cache)
    nxt = next_tokens_of(logits[:, -1], sampling, gen)
    for i, t in enumerate(nxt.tolist()):
        rows.emit(i, [t], None, None)
    lens = valid.sum(1)
    while (keep := rows.done()) is None or keep.numel():
        if keep is not None:
            keep = keep.to(dev)
            select_rows(cache, keep)
            nxt, valid, lens = nxt[keep], valid[keep], lens[keep]
        ti = time.perf_counter()
        step_valid = torch.ones(len(rows.live), 1, dtype=torch.bool, device=dev)
        _, logits = base.forward(nxt[:, None], attention_mask=padded_causal_mask(step_valid, valid, base.dtype),
                                 position_ids=lens[:, None], past_key_values=cache)
        valid, lens = torch.cat([valid, step_valid], 1), lens + 1
        nxt = next_tokens_of(logits[:, -1], sampling, gen)
        seconds = time.perf_counter() - ti
        for i, t in enumerate(nxt.tolist()):
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
    """Speculative decoding of a left-padded batch, each sequence with its own tree and its own accepted length.
    Greedy: every row token-identical to `base_decode`. Sampling: recursive rejection sampling per row, distributed
    exactly as base sampling. on_tokens(prompt index, new tokens so far): called after the prefill and after every
    verify step (truncated at max_new_tokens / EOS), for streaming. max_new_tokens: one limit, or one per prompt;
    cancelled(prompt index) → True ends that row at the next step boundary (the server: client gone, stop string).
    force_accept (timing benchmarks only — the output is NOT the base's): every verify step accepts the path to
    its tree's deepest node, as if the base agreed with the drafter, so a random-weight base can be timed at full depth.
    Slots of rejected nodes are not kept; a row that accepts fewer nodes than the longest row of its step leaves
    masked padding slots behind in both caches (positions count real tokens only).
    drafting: an asynchronous drafting plugin (plugins/async_draft.py), batch 1: `start(...)` before each verify
    pre-drafts next trees for likely outcomes while the base runs; `finish(accepted tokens)` after it returns the
    drafter state for a hit (the drafter then neither consumes the accepted tokens nor drafts) or None."""
    dev = base.device
    gen = sampling.generator(dev)
    rows = _Rows(prompts, per_row(max_new_tokens, len(prompts)), eos, cancelled)
    ids, base_valid, pos = left_pad(prompts, dev)
    base_cache = full_cache(base, ids.shape[1] + max(rows.max_new) + total_tokens + 1)
    draft_cache = drafter.new_cache(base_cache)
    feature_layers = drafter.feature_layers
    hidden, logits = base.forward(ids, attention_mask=padded_causal_mask(base_valid, None, base.dtype),
                                  position_ids=pos, past_key_values=base_cache, feature_layers=feature_layers)
    root = next_tokens_of(logits[:, -1], sampling, gen)
    # Drafter prefill: pairs (h_j, t_{j+1}) for j = 0..n-1.
    feats, draft_valid = drafter.prefill(hidden, ids, torch.cat([ids[:, 1:], root[:, None]], 1), pos, draft_cache,
                                         valid=base_valid)
    last_feat, root_pos = feats[:, -1], base_valid.sum(1)
    for i, t in enumerate(root.tolist()):
        rows.emit(i, [t], None, None)

    def stream():
        if on_tokens is not None:
            for r in rows.live:
                on_tokens(r, rows.new_tokens(r))

    stream()
    if drafting is not None and len(prompts) != 1:
        raise ValueError("asynchronous drafting decodes one sequence at a time (inference.batch_size 1)")
    ready = None  # a tree pre-drafted by the drafting plugin for this step's outcome
    while (keep := rows.done()) is None or keep.numel():
        if keep is not None:
            keep = keep.to(dev)
            select_rows(base_cache, keep)
            select_rows(draft_cache, keep)
            root, last_feat, root_pos = root[keep], last_feat[keep], root_pos[keep]
            base_valid, draft_valid = base_valid[keep], draft_valid[keep]
        ti = time.perf_counter()
        base_len, draft_len = base_valid.shape[1], draft_valid.shape[1]
        if ready is not None:
            tree, ready = ready, None
        else:
            tree = expand_tree(drafter, root, last_feat, draft_cache, draft_valid, root_pos, depth, top_k,
                               total_tokens, best_first, sampling, gen)
            crop_cache(draft_cache, draft_len)
        if drafting is not None:
            drafting.start(drafter, tree, draft_cache, draft_valid, root_pos, last_feat,
                           (depth, top_k, total_tokens, best_first, sampling))
        anc = ancestor_matrix(tree.parents, tree.depths)
        hidden, logits = base.forward(tree.tokens, attention_mask=tree_attention_mask(anc, base_valid, base.dtype),
                                      position_ids=root_pos[:, None] + tree.depths, past_key_values=base_cache,
                                      feature_layers=feature_layers)
        if sampling.greedy:
            base_argmax = logits.argmax(-1)
            if force_accept:  # the path to the deepest node, as if the base had agreed all along it
                paths, lens = path_indices(take(anc, tree.depths.argmax(1, keepdim=True))[:, 0])
            else:
                paths, lens = greedy_accept(tree, anc, base_argmax)
            bonus = base_argmax.gather(1, paths.gather(1, (lens - 1)[:, None]))[:, 0]
        else:
            probs = sampling_probs(logits, sampling.temperature, sampling.top_p)
            paths, lens, bonus = sample_accept(tree, probs, gen)
        width = paths.shape[1]
        step_valid = torch.arange(width, device=dev)[None] < lens[:, None]
        gather_cache(base_cache, torch.cat([torch.arange(base_len, device=dev).expand(len(lens), -1),
                                            base_len + paths], 1))
        base_valid = torch.cat([base_valid, step_valid], 1)
        # Row b's next tokens along its path: the accepted children, then the bonus token.
        nxt = tree.tokens.gather(1, torch.cat([paths[:, 1:], paths[:, -1:]], 1))
        nxt.scatter_(1, (lens - 1)[:, None], bonus[:, None])
        hit = drafting.finish(nxt[0, : int(lens[0])].tolist()) if drafting is not None else None
        if hit is not None:  # pre-drafted while the base verified: the drafter state after these tokens, and a tree
            draft_cache, draft_valid, last_feat, ready = hit
        else:
            # Drafter consumes the accepted path: pairs (h_path[i], next token) at positions root_pos + i.
            step_pos = root_pos[:, None] + torch.arange(width, device=dev)[None]
            feats = drafter(take(hidden, paths), nxt, step_pos, past_key_values=draft_cache,
                            attention_mask=padded_causal_mask(step_valid, draft_valid, drafter.compute_dtype))
            draft_valid = torch.cat([draft_valid, step_valid], 1)
            last_feat = take(feats, (lens - 1)[:, None])[:, 0]
        root, root_pos = bonus, root_pos + lens
        seconds = time.perf_counter() - ti
        for i, (n, row) in enumerate(zip(lens.tolist(), nxt.tolist())):
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
