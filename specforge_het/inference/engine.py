"""Speculative decoding with a drafter over a frozen base (batch 1, greedy or sampled), and the base-only baseline.

Per iteration: the drafter builds a tree from its last feature; the base verifies the whole tree in one
forward (tree attention mask + tree position ids); the accepted path's KV entries are compacted in place;
the drafter consumes the base's features of the accepted path and crops its own tree entries.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .tree import ancestor_matrix, expand_tree, greedy_accept, sample_accept, sampling_probs, tree_attention_mask


@dataclass
class Sampling:
    """temperature 0 = greedy (then top_p is unused)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"sampling needs temperature >= 0 and 0 < top_p <= 1, got {self}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self, device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed)


@dataclass
class DecodeResult:
    tokens: list[int]  # prompt + new tokens (truncated at max_new_tokens / EOS)
    new_tokens: int = 0
    steps: int = 0  # base verify forwards after the prefill
    accepted: list[int] = field(default_factory=list)  # draft tokens accepted per step
    seconds: float = 0.0
    iteration_seconds: list[float] = field(default_factory=list)

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


def compact_cache(cache: DynamicCache, keep: torch.Tensor) -> None:
    """Keep only the sequence positions `keep` (sorted) in every layer of a DynamicCache."""
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(-2, keep)
        layer.values = layer.values.index_select(-2, keep)


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Drop every position from `length` on (the drafter's tree entries after a round)."""
    for layer in cache.layers:
        layer.keys = layer.keys[..., :length, :]
        layer.values = layer.values[..., :length, :]


def _finished(tokens: list[int], prompt_len: int, max_new: int, eos: set[int]) -> bool:
    new = tokens[prompt_len:]
    return len(new) >= max_new or any(t in eos for t in new)


def truncate(new_tokens: list[int], max_new: int, eos: set[int]) -> list[int]:
    out = []
    for t in new_tokens[:max_new]:
        out.append(t)
        if t in eos:
            break
    return out


def _close(res: DecodeResult, tokens: list[int], prompt: list[int], max_new: int, eos: set[int],
           t0: float) -> DecodeResult:
    res.seconds = time.perf_counter() - t0
    res.tokens = list(prompt) + truncate(tokens[len(prompt):], max_new, eos)
    res.new_tokens = len(res.tokens) - len(prompt)
    return res


def _next_token(logits: torch.Tensor, sampling: Sampling, gen) -> torch.Tensor:
    if sampling.greedy:
        return logits.argmax()
    return torch.multinomial(sampling_probs(logits, sampling.temperature, sampling.top_p), 1, generator=gen)[0]


@torch.no_grad()
def base_decode(base, prompt: list[int], max_new_tokens: int, eos: set[int],
                sampling: Sampling = Sampling()) -> DecodeResult:
    """Plain one-token-per-forward decoding with a KV cache (greedy or sampled): the reference and speed baseline."""
    t0 = time.perf_counter()
    gen = sampling.generator(base.device)
    ids = torch.tensor([prompt], device=base.device)
    cache = full_cache(base, len(prompt) + max_new_tokens)
    _, logits = base.forward(ids, past_key_values=cache)
    tokens = list(prompt) + [int(_next_token(logits[0, -1], sampling, gen))]
    res = DecodeResult(tokens=tokens)
    while not _finished(tokens, len(prompt), max_new_tokens, eos):
        ti = time.perf_counter()
        _, logits = base.forward(torch.tensor([[tokens[-1]]], device=base.device), past_key_values=cache)
        tokens.append(int(_next_token(logits[0, -1], sampling, gen)))
        res.steps += 1
        res.accepted.append(0)
        res.iteration_seconds.append(time.perf_counter() - ti)
    return _close(res, tokens, prompt, max_new_tokens, eos, t0)


@torch.no_grad()
def speculative_decode(base, drafter, prompt: list[int], max_new_tokens: int, eos: set[int],
                       depth: int, top_k: int, total_tokens: int, sampling: Sampling = Sampling(),
                       on_tokens=None, best_first: bool = False) -> DecodeResult:
    """Greedy: token-identical to `base_decode`. Sampling: recursive rejection sampling, distributed exactly as it.
    on_tokens(new_tokens): called after the prefill and after every verify step with all new tokens so far
    (truncated at max_new_tokens / EOS), for streaming."""
    t0 = time.perf_counter()
    dev = base.device
    gen = sampling.generator(dev)
    ids = torch.tensor([prompt], device=dev)
    base_cache = full_cache(base, len(prompt) + max_new_tokens + total_tokens + 1)
    draft_cache = full_cache()
    feature_layers = drafter.feature_layers
    hidden, logits = base.forward(ids, past_key_values=base_cache, feature_layers=feature_layers)
    root = _next_token(logits[0, -1], sampling, gen)
    tokens = list(prompt) + [int(root)]
    # Drafter prefill: pairs (h_j, t_{j+1}) for j = 0..n-1.
    n = len(prompt)
    next_tokens = torch.cat([ids[0, 1:], root.view(1)])
    feats = drafter.prefill(hidden, ids, next_tokens[None], torch.arange(n, device=dev)[None], draft_cache)
    last_feat = feats[0, -1]
    res = DecodeResult(tokens=tokens)
    if on_tokens is not None:
        on_tokens(truncate(tokens[n:], max_new_tokens, eos))
    while not _finished(tokens, len(prompt), max_new_tokens, eos):
        ti = time.perf_counter()
        base_len = base_cache.get_seq_length()  # = position of the root
        draft_len = draft_cache.get_seq_length()
        tree = expand_tree(drafter, root, last_feat, draft_cache, draft_len, base_len, depth, top_k, total_tokens,
                           best_first)
        crop_cache(draft_cache, draft_len)
        anc = ancestor_matrix(tree.parents, tree.depths)
        mask = tree_attention_mask(anc, base_len, base.dtype)
        positions = (base_len + tree.depths)[None]
        hidden, logits = base.forward(tree.tokens[None], attention_mask=mask, position_ids=positions,
                                      past_key_values=base_cache, feature_layers=feature_layers)
        if sampling.greedy:
            base_argmax = logits[0].argmax(-1)
            path = greedy_accept(tree, anc, base_argmax)
            bonus = base_argmax[path[-1]]
        else:
            probs = sampling_probs(logits[0], sampling.temperature, sampling.top_p)
            path, bonus = sample_accept(tree, probs, gen)
        compact_cache(base_cache, torch.cat([torch.arange(base_len, device=dev), base_len + path]))
        accepted_tokens = tree.tokens[path[1:]]
        tokens.extend(accepted_tokens.tolist() + [int(bonus)])
        # Drafter consumes the accepted path: pairs (h_path[i], next token) at positions base_len + i.
        next_tokens = torch.cat([accepted_tokens, bonus.view(1)])
        pos = torch.arange(base_len, base_len + path.numel(), device=dev)[None]
        feats = drafter(hidden[:, path], next_tokens[None], pos, past_key_values=draft_cache)
        last_feat, root = feats[0, -1], bonus
        res.steps += 1
        res.accepted.append(path.numel() - 1)
        res.iteration_seconds.append(time.perf_counter() - ti)
        if on_tokens is not None:
            on_tokens(truncate(tokens[n:], max_new_tokens, eos))
    return _close(res, tokens, prompt, max_new_tokens, eos, t0)


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
