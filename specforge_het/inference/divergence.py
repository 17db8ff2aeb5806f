"""Telling a bug from a near-tie where speculative output leaves the reference (bf16 / fp16 bases).

Verification runs k+1 rows through the base where base-only decoding runs one, so the kernels differ and, in a low
precision dtype, round differently. Where the base's two best tokens are within rounding of each other, the two
paths may pick different ones — each is the base's greedy choice to the base's own precision. At a divergence (the
first position where the outputs differ; the prefix before it is shared) the base's logits for that position are
recomputed in several shapes: the decode shape (the last prefix token fed alone over a KV cache of the rest) and
verify shapes (the last k prefix tokens fed as one block). The divergence is a **near-tie** when, in every shape,
the two tokens' logits differ by at most the larger of
- `ulps` units in the last place (ulp) of the dtype at their magnitude (one rounding of each logit), and
- twice the base's own **shape noise** at that position: the largest change of any logit of the vocabulary between
  the decode shape and a verify shape. Any two logits can move that much apart or together with the kernel shape
  alone, so tokens closer than that are ranked by rounding, not by the model. In bf16 the noise is what 30 layers of
  rounding add up to (tenths of a logit for a 135M model); in fp32 it is ~1e-5, so fp32 stays strict;
otherwise it is a **mismatch**: the speculative path chose a token the base does not rank (near) first — a bug.

The default bound, NEAR_TIE_ULPS = 2: each logit is rounded to the dtype once (≤ ½ ulp), so two logits that are equal
before rounding can differ by 1 ulp after it, and the other shape's rounding adds at most as much again. A bf16
logit of magnitude 8–16 has an ulp of 0.0625: a margin of two ulps (0.125) is a difference the dtype cannot resolve
reliably; a wrong verifier shows margins of whole logits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

NEAR_TIE_ULPS = 2.0


def ulp(value: float, dtype: torch.dtype) -> float:
    """The spacing of `dtype` numbers at |value| (its unit in the last place)."""
    info = torch.finfo(dtype)
    mag = max(abs(value), info.tiny)
    return info.eps * 2.0 ** math.floor(math.log2(mag))


def first_divergence(got: list[int], want: list[int], start: int) -> int | None:
    """The first index ≥ start where the two token lists differ (a length difference counts), or None."""
    for i in range(start, max(len(got), len(want))):
        if i >= len(got) or i >= len(want) or got[i] != want[i]:
            return i
    return None


@torch.no_grad()
def logits_for_next(base, prefix: list[int], block: int) -> torch.Tensor:
    """The base's logits for the token after `prefix`, with the last `block` tokens fed as one forward over a
    KV cache of the rest (block 1: the decode shape; block k > 1: a verify shape)."""
    ids = torch.tensor([prefix], device=base.device)
    block = max(1, min(block, len(prefix)))
    cache = DynamicCache()
    if len(prefix) > block:
        base.forward(ids[:, :-block], past_key_values=cache)
    pos = torch.arange(len(prefix) - block, len(prefix), device=base.device)[None]
    return base.forward(ids[:, -block:], position_ids=pos, past_key_values=cache)[1][0, -1]


@dataclass
class Divergence:
    position: int  # index into the token list (prompt included)
    reference_token: int
    speculative_token: int | None  # None: the speculative output ended here
    margins: dict = field(default_factory=dict)  # block size → |logit(ref) − logit(spec)| in that shape
    noise: float = 0.0  # the largest |Δ logit| over the vocabulary between the decode shape and any verify shape
    bounds: dict = field(default_factory=dict)  # block size → ulps × ulp at that shape's magnitude
    near_tie: bool = False

    def describe(self) -> str:
        kind = "near-tie" if self.near_tie else "MISMATCH"
        worst = max(self.margins.values(), default=float("nan"))
        return (f"{kind} at token {self.position}: reference {self.reference_token} vs speculative "
                f"{self.speculative_token}, logit margin ≤ {worst:.4g} (shape noise {self.noise:.3g}) across shapes "
                f"{sorted(self.margins)}")


def classify(base, got: list[int], want: list[int], prompt_len: int, blocks: list[int],
             ulps: float = NEAR_TIE_ULPS) -> Divergence | None:
    """None when `got` equals `want`; otherwise the first divergence, classified (see the module docstring)."""
    t = first_divergence(got, want, prompt_len)
    if t is None:
        return None
    a = want[t] if t < len(want) else None
    b = got[t] if t < len(got) else None
    d = Divergence(t, a, b)
    if a is None or b is None:  # one output stopped early (EOS or length): the tokens at t are not comparable
        return d
    shapes = {block: logits_for_next(base, want[:t], block).float() for block in sorted(set(blocks) | {1})}
    d.noise = max(float((logits - shapes[1]).abs().max()) for logits in shapes.values())
    for block, logits in shapes.items():
        if block not in blocks:
            continue
        la, lb = float(logits[a]), float(logits[b])
        d.margins[block] = abs(la - lb)
        d.bounds[block] = max(ulps * ulp(max(abs(la), abs(lb)), base.dtype), 2 * d.noise)
    d.near_tie = all(d.margins[k] <= d.bounds[k] for k in d.margins)
    return d


def verdict(divergences: list[Divergence | None]) -> tuple[str, bool]:
    """('identical' | 'N near-ties' | 'M mismatches (…)', passed) over one decoder's outputs."""
    found = [d for d in divergences if d is not None]
    mismatches = [d for d in found if not d.near_tie]
    if not found:
        return "identical", True
    if not mismatches:
        return f"{len(found)} near-tie{'s' if len(found) > 1 else ''}", True
    return f"{len(mismatches)} mismatch{'es' if len(mismatches) > 1 else ''} ({mismatches[0].describe()})", False


def check_outputs(base, outputs: list[list[int]], references: list[list[int]], prompt_lens: list[int],
                  blocks: list[int], ulps: float = NEAR_TIE_ULPS) -> dict:
    """Compare each output with its reference; classify every divergence. → a report row fragment: identical,
    near_ties and mismatches counts, the verdict text, passed, and the divergences themselves."""
    divs = [classify(base, o, r, n, blocks, ulps) for o, r, n in zip(outputs, references, prompt_lens)]
    text, passed = verdict(divs)
    return {"identical": sum(d is None for d in divs), "near_ties": sum(d is not None and d.near_tie for d in divs),
            "mismatches": sum(d is not None and not d.near_tie for d in divs), "verdict": text, "passed": passed,
            "divergences": [{"prompt": i, "position": d.position, "reference": d.reference_token,
                             "speculative": d.speculative_token, "near_tie": d.near_tie,
                             "margins": d.margins, "bounds": d.bounds, "noise": d.noise}
                            for i, d in enumerate(divs) if d is not None]}
