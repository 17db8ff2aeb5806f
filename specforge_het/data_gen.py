"""data_gen: run the frozen base over conversations and dump token ids, assistant loss masks and the
last-layer hidden states into a sharded, resumable dataset.

    python -m specforge_het.data_gen [--@preset ...] [--data.conversations F] [--data.dataset_dir D]

Rerunning the same command after an interruption resumes at the first missing shard.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from .config import RunConfig, run_entry, save_resolved_config
from .data.conversations import read_conversations, tokenize_conversation
from .data.shards import ShardWriter
from .modeling.base import FrozenBase, load_base, resolve_dtype


def tokenize_all(base: FrozenBase, cfg: RunConfig) -> list[tuple[list[int], list[int]]]:
    tok = base.tokenizer
    if cfg.data.chat_template:
        tok.chat_template = Path(cfg.data.chat_template).read_text()
    convs, report = read_conversations(cfg.data.conversations, cfg.data.max_samples)
    samples, no_assistant, bad_template = [], 0, 0
    for msgs in convs:
        enc = tokenize_conversation(tok, msgs, cfg.data.max_length)
        if enc is None:
            bad_template += 1
        elif sum(enc[1]) == 0:
            no_assistant += 1
        else:
            samples.append(enc)
    print(f"data_gen: {report.summary()}; {no_assistant} without assistant tokens (after truncation to "
          f"{cfg.data.max_length}), {bad_template} not prefix-consistent under the chat template; "
          f"{len(samples)} samples kept")
    return samples


@torch.no_grad()
def hidden_states_for(base: FrozenBase, chunk: list[tuple[list[int], list[int]]], batch_size: int,
                      dtype: torch.dtype) -> list[dict]:
    """Base forward over a chunk in length-sorted batches; results come back in the chunk's order."""
    order = sorted(range(len(chunk)), key=lambda i: len(chunk[i][0]))
    out: list[dict | None] = [None] * len(chunk)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        T = max(len(chunk[i][0]) for i in idx)
        ids = torch.zeros(len(idx), T, dtype=torch.long)
        attn = torch.zeros(len(idx), T, dtype=torch.long)
        for r, i in enumerate(idx):
            n = len(chunk[i][0])
            ids[r, :n] = torch.tensor(chunk[i][0])
            attn[r, :n] = 1
        hidden, _ = base.forward(ids.to(base.device), attention_mask=attn.to(base.device))
        for r, i in enumerate(idx):
            n = len(chunk[i][0])
            out[i] = {"input_ids": torch.tensor(chunk[i][0]), "loss_mask": torch.tensor(chunk[i][1]),
                      "hidden": hidden[r, :n].to(dtype).cpu()}
    return out


def run(cfg: RunConfig, presets: list[str]) -> Path:
    base = load_base(cfg.base)
    out_dir = Path(cfg.data.dataset_dir)
    hidden_dtype = resolve_dtype(cfg.data.hidden_dtype, "data.hidden_dtype")
    samples = tokenize_all(base, cfg)
    fingerprint = {"base": cfg.base.model_name_or_path, "conversations": cfg.data.conversations,
                   "max_length": cfg.data.max_length, "max_samples": cfg.data.max_samples,
                   "shard_size": cfg.data.shard_size, "hidden_dtype": cfg.data.hidden_dtype,
                   "chat_template": cfg.data.chat_template, "num_samples": len(samples)}
    writer = ShardWriter(out_dir, cfg.data.shard_size, fingerprint,
                         {"hidden_size": base.hidden_size, "layers": ["last"], "hidden_dtype": cfg.data.hidden_dtype})
    save_resolved_config(cfg, out_dir, "data_gen", presets)
    n = cfg.data.shard_size
    chunks = [samples[i: i + n] for i in range(0, len(samples), n)]
    if writer.done_shards:
        print(f"data_gen: resuming at shard {writer.done_shards} of {len(chunks)}")
    total_tokens = sum(len(s[0]) for c in chunks[writer.done_shards:] for s in c)
    t0 = time.time()
    with tqdm(total=total_tokens, unit="tok", unit_scale=True, desc="data_gen") as bar:
        for chunk in chunks[writer.done_shards:]:
            writer.write(hidden_states_for(base, chunk, cfg.data.batch_size, hidden_dtype))
            bar.update(sum(len(s[0]) for s in chunk))
    elapsed = time.time() - t0
    manifest = writer.finish({"num_samples": len(samples), "num_tokens": sum(len(s[0]) for s in samples)})
    print(f"data_gen: {manifest['num_samples']} samples, {manifest['num_tokens']} tokens in "
          f"{len(manifest['shards'])} shards → {out_dir} ({total_tokens / max(elapsed, 1e-9):.0f} tok/s this run)")
    return out_dir


if __name__ == "__main__":
    run_entry("data_gen", __doc__.strip().splitlines()[0], run)
