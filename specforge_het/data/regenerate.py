"""Self-distillation: the base rewrites every assistant turn of a conversation set (what EAGLE-3 and SpecForge
recommend: a drafter learns the base's own distribution best from the base's own answers).

Turns are regenerated in order, so turn k's answer is conditioned on the regenerated turns before it.
Generation is batched (left padding) across conversations.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from .conversations import render


@torch.no_grad()
def complete(base, prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float = 0.95,
             batch_size: int = 16, seed: int = 0, desc: str = "regenerating") -> list[list[int]]:
    """Continue each prompt (token ids); returns the new token ids up to and excluding EOS/padding."""
    from transformers import GenerationConfig

    tok = base.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = base.model.generation_config.eos_token_id or tok.eos_token_id
    eos_set = set(eos if isinstance(eos, list) else [eos])
    sample = temperature > 0
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, num_beams=1,
                               temperature=temperature if sample else None, top_p=top_p if sample else None,
                               eos_token_id=sorted(eos_set), pad_token_id=pad)
    torch.manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    out: list[list[int]] = [[] for _ in prompts]
    for s in tqdm(range(0, len(order), batch_size), desc=desc):
        idx = order[s: s + batch_size]
        T = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), T), pad, dtype=torch.long)
        attn = torch.zeros(len(idx), T, dtype=torch.long)
        for r, i in enumerate(idx):  # left padding: every prompt ends at column T-1
            ids[r, T - len(prompts[i]):] = torch.tensor(prompts[i])
            attn[r, T - len(prompts[i]):] = 1
        gen = base.model.generate(input_ids=ids.to(base.device), attention_mask=attn.to(base.device),
                                  generation_config=gen_cfg)[:, T:].tolist()
        for r, i in enumerate(idx):
            new = gen[r]
            cut = next((j for j, t in enumerate(new) if t in eos_set), len(new))
            out[i] = new[:cut]
    return out


def regenerate_conversations(base, conversations: list[list[dict]], max_new_tokens: int, temperature: float,
                             batch_size: int = 16, seed: int = 0) -> list[list[dict]]:
    """Replace every assistant turn with the base's own answer; conversations without any keep one
    generated answer after their last user turn."""
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
        answers = complete(base, prompts, max_new_tokens, temperature, batch_size=batch_size, seed=seed + turn,
                           desc=f"regenerating turn {turn + 1}")
        for i, ans in zip(todo, answers):
            k = slots[i][turn]
            msg = {"role": "assistant", "content": base.tokenizer.decode(ans, skip_special_tokens=True)}
            if k == len(convs[i]):
                convs[i].append(msg)
            else:
                convs[i][k] = msg
    return convs
