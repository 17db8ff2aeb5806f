"""Block-drafter training (DFlash's recipe, shared by the block families): many blocks per sequence in one forward,
each drafting its B−1 tokens in parallel.

For a sequence x_0..x_{T−1} with base features, an anchor a (an assistant position, a ≥ 1) makes the block
[x_a, mask × (B−1)] at positions a..a+B−1, which sees the context vectors of positions < a (block_common/model.py).
Block slot i predicts x_{a+i}: its target is the base's distribution there (softmax of the base's logits at row
a+i−1, restricted to the draft vocabulary). Loss = Σ_i decay**(i−1) · D_i / Σ_i decay**(i−1) over slots whose token
is an assistant token, D = `algorithm.loss` of the menu. `algorithm.num_anchors` anchors per sequence, drawn at random
among the eligible positions while training (all of them, in chunks, for the simulated τ).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...algorithms.losses import distribution_loss, masked_mean, top1_hits
from ...algorithms.unroll import drafter_features, packed, same_segment
from .model import block_attention, block_feature_layers


def eligible_anchors(mask: torch.Tensor, packing: dict | None = None) -> torch.Tensor:
    """[B, T] → bool [B, T]: positions a ≥ 1 whose next token is an assistant (loss) token (packed rows: a ≥ 1
    within its conversation, and the next token in the same one)."""
    ok = torch.zeros_like(mask, dtype=torch.bool)
    ok[:, 1:-1] = mask[:, 2:].bool()
    if packing:
        ok &= (packing["position_ids"] >= 1) & same_segment(packing["segment_ids"], 1, mask.shape[1])
    return ok


def pick_anchors(eligible: torch.Tensor, n: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to n eligible positions per row, at random → (anchors [B, n'], real [B, n'])."""
    n = min(n, eligible.shape[1])
    score = torch.rand(eligible.shape, generator=generator, device=eligible.device).masked_fill(~eligible, -1.0)
    top = score.topk(n, dim=1)
    return top.indices, top.values >= 0


def block_outputs(drafter, context: torch.Tensor, ids: torch.Tensor, anchors: torch.Tensor,
                  packing: dict | None = None) -> torch.Tensor:
    """The drafter over one block per anchor: context [B, T, H], ids [B, T], anchors [B, N] → outputs of the mask
    slots [B, N, B−1, H] (slot i at position anchor + i). Packed rows: positions within the anchor's conversation,
    whose context alone the block sees."""
    bsz, t = ids.shape
    n, size = anchors.shape[1], drafter.block_size
    dev = ids.device
    block_ids = torch.full((bsz, n, size), drafter.mask_token_id, dtype=torch.long, device=dev)
    block_ids[..., 0] = ids.gather(1, anchors)
    ctx_pos = packing["position_ids"] if packing else torch.arange(t, device=dev).expand(bsz, -1)
    block_pos = ctx_pos.gather(1, anchors)[..., None] + torch.arange(size, device=dev)
    groups = torch.arange(n, device=dev).repeat_interleave(size).expand(bsz, -1)
    before = torch.arange(t, device=dev)[None, None, :] < anchors.repeat_interleave(size, 1)[..., None]
    if packing:
        seg = packing["segment_ids"]
        before = before & (seg[:, None, :] == seg.gather(1, anchors).repeat_interleave(size, 1)[..., None])
    mask = block_attention(torch.ones(bsz, t, dtype=torch.bool, device=dev), before, groups, context.dtype)
    out = drafter(context, ctx_pos, block_ids.view(bsz, -1), block_pos.view(bsz, -1), mask)
    return out.view(bsz, n, size, -1)[:, :, 1:]


def _targets(values: torch.Tensor, anchors: torch.Tensor, size: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """values [B, T, ...] at rows anchor + i − shift for slots i = 1..size−1 → ([B, N, size−1, ...], and whether
    the drafted token anchor + i is inside the sequence [B, N, size−1])."""
    t = values.shape[1]
    rows = anchors[..., None] + torch.arange(1, size, device=anchors.device) - shift
    inside = (rows >= 0) & (rows < t) & (rows + shift < t)
    flat = rows.clamp(0, t - 1).flatten(1)
    picked = values.gather(1, flat.view(*flat.shape, *([1] * (values.dim() - 2))).expand(-1, -1, *values.shape[2:]))
    return picked.view(*rows.shape, *values.shape[2:]), inside


@dataclass
class Blocks:
    """One batch's training blocks: anchors [B, N], the drafter's slot outputs [B, N, B−1, H], the base's target
    logits [B, N, B−1, V_draft], whether its top token is in the draft vocabulary, and which slots count (mask)."""
    anchors: torch.Tensor
    outputs: torch.Tensor
    target_logits: torch.Tensor
    in_vocab: torch.Tensor
    mask: torch.Tensor


def training_blocks(drafter, batch: dict, alg, training: bool) -> Blocks:
    ids, last, mask = batch["input_ids"], batch["hidden"], batch["loss_mask"]
    size = drafter.block_size
    gen = None if training else torch.Generator(device=ids.device).manual_seed(0)  # evaluation: the same anchors
    packing = packed(batch)
    anchors, real = pick_anchors(eligible_anchors(mask, packing), alg.num_anchors, gen)
    out = block_outputs(drafter, drafter.context(drafter_features(drafter, batch)), ids, anchors, packing)
    feats, inside = _targets(last, anchors, size, shift=1)  # the base's feature before each drafted token
    if packing:  # a drafted token of the next conversation is no target
        seg = packing["segment_ids"]
        inside = inside & (_targets(seg, anchors, size, shift=0)[0] == seg.gather(1, anchors)[..., None])
    target_logits, in_vocab = drafter.target_logits(feats)
    tok_mask, _ = _targets(mask, anchors, size, shift=0)
    return Blocks(anchors, out, target_logits, in_vocab, (inside & real[..., None] & tok_mask.bool()).to(out.dtype))


def block_distillation(logits: torch.Tensor, blocks: Blocks, alg) -> tuple[torch.Tensor, dict]:
    """The menu's loss per slot, slot i weighted decay**(i−1), and the per-slot top-1 agreement."""
    m, in_vocab = blocks.mask, blocks.in_vocab
    dtype, slots = m.dtype, m.shape[-1]
    per_pos = distribution_loss(alg.loss)(blocks.target_logits, logits)  # [B, N, B−1]
    decay = alg.ttt_decay ** torch.arange(slots, device=m.device, dtype=dtype)
    total = sum(decay[i] * masked_mean(per_pos[..., i], m[..., i] * in_vocab[..., i].to(dtype))
                for i in range(slots)) / decay.sum()
    with torch.no_grad():
        hits = top1_hits(logits, blocks.target_logits, in_vocab).to(dtype)
        metrics = {f"acc_{i}": masked_mean(hits[..., i], m[..., i]) for i in range(slots)}
    metrics["acc"] = metrics["acc_0"]
    return total, metrics


@torch.no_grad()
def block_simulated_acceptance(drafter, batch: dict, depth: int, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain drafting of min(depth, B−1) from every eligible anchor, as in evaluation.simulated_acceptance:
    (accepted, eligible) per draft position; positions beyond the block count as never reached."""
    ids, last, mask = batch["input_ids"], batch["hidden"], batch["loss_mask"]
    size = drafter.block_size
    d = min(depth, size - 1)
    accepted, eligible = torch.zeros(depth, dtype=torch.long), torch.zeros(depth, dtype=torch.long)
    context = drafter.context(drafter_features(drafter, batch))
    head = drafter.base_lm_head
    greedy = head(last.to(head.weight.dtype)).argmax(-1)  # the base's next token after each row
    ok = eligible_anchors(mask)
    for b in range(ids.shape[0]):
        where = ok[b].nonzero()[:, 0]
        for start in range(0, where.numel(), chunk):
            anchors = where[start:start + chunk][None]
            out = block_outputs(drafter, context[b:b + 1], ids[b:b + 1], anchors)
            drafted = drafter.draft_to_target(drafter.greedy_block(out, ids[b:b + 1].gather(1, anchors)))[0]  # [N, B−1]
            want, inside = _targets(greedy[b:b + 1], anchors, size, shift=1)
            data, _ = _targets(ids[b:b + 1], anchors, size, shift=0)
            want, inside, data = want[0], inside[0], data[0]
            reach = torch.ones(anchors.shape[1], dtype=torch.bool, device=ids.device)
            for i in range(d):
                reach = reach & inside[:, i]
                hit = reach & (drafted[:, i] == want[:, i])
                eligible[i] += int(reach.sum())
                accepted[i] += int(hit.sum())
                reach = hit & (data[:, i] == want[:, i])  # the data followed the base: the next position is fed right
    return accepted, eligible


def feature_layers(num_layers: int, configured: list) -> list:
    return list(configured) if configured else block_feature_layers(num_layers)
