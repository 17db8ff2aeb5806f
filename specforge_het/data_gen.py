"""data_gen: run the frozen base over conversations and dump token ids, assistant loss masks and hidden states
(the last layer, plus `data.aux_layer_ids` for EAGLE-3-style drafters) into a sharded, resumable dataset.

    python -m specforge_het.data_gen [--@preset ...] [--data.conversations F] [--data.dataset_dir D]
    python -m specforge_het.data_gen --data.regenerate_to F2 ...      # the base rewrites the answers first
    python -m specforge_het.data_gen --data.ds_range [0,5000] ...     # one slice of the work
    python -m specforge_het.data_gen --data.merge_from [D1,D2] --data.dataset_dir D   # concatenate slices
    accelerate launch --num_processes N -m specforge_het.data_gen ...  # data-parallel; rank 0 merges

Rerunning the same command after an interruption resumes at the first missing shard.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .algorithms import get_algorithm
from .config.cli import run_entry, save_resolved_config
from .config.schema import RunConfig
from .config.errors import ConfigError
from .data.conversations import set_chat_template, tokenize_all
from .data.self_distill import training_conversations
from .data.shards import MANIFEST, ShardWriter, merge_datasets
from .modeling.base import FrozenBase, base_identity, load_base, resolve_dtype
from .utils.io import sha256_file

log = logging.getLogger(__name__)


@torch.no_grad()
def hidden_states_for(base: FrozenBase, chunk: list[tuple[list[int], list[int]]], batch_size: int,
                      dtype: torch.dtype, aux_layer_ids: list[int]) -> list[dict]:
    """Base forward over a chunk in length-sorted batches (little padding); results in the chunk's order."""
    order = sorted(range(len(chunk)), key=lambda i: len(chunk[i][0]))
    out: list[dict | None] = [None] * len(chunk)
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        T = max(len(chunk[i][0]) for i in idx)
        ids = torch.zeros(len(idx), T, dtype=torch.long)
        attn = torch.zeros(len(idx), T, dtype=torch.long)
        for r, i in enumerate(idx):  # right padding: causal attention keeps real positions exact
            n = len(chunk[i][0])
            ids[r, :n] = torch.tensor(chunk[i][0])
            attn[r, :n] = 1
        last, aux = base.capture(ids.to(base.device), attn.to(base.device), aux_layer_ids)
        for r, i in enumerate(idx):
            n = len(chunk[i][0])
            sample = {"input_ids": torch.tensor(chunk[i][0]), "loss_mask": torch.tensor(chunk[i][1]),
                      "hidden": last[r, :n].to(dtype).cpu()}
            if aux is not None:
                sample["aux_hidden"] = aux[r, :n].to(dtype).cpu()
            out[i] = sample
    return out


def dump(base: FrozenBase, cfg: RunConfig, samples: list, out_dir: Path, fingerprint: dict, aux_ids: list[int],
         desc: str = "data_gen") -> dict:
    writer = ShardWriter(out_dir, cfg.data.shard_size, fingerprint,
                         {"hidden_size": base.hidden_size, "hidden_dtype": cfg.data.hidden_dtype,
                          "aux_layer_ids": aux_ids, "base": cfg.base.model_name_or_path})
    hidden_dtype = resolve_dtype(cfg.data.hidden_dtype, "data.hidden_dtype")
    n = cfg.data.shard_size
    chunks = [samples[i: i + n] for i in range(0, len(samples), n)]
    if writer.done_shards:
        log.info(f"{desc}: resuming at shard {writer.done_shards} of {len(chunks)}")
    todo = chunks[writer.done_shards:]
    total = sum(len(s[0]) for c in todo for s in c)
    t0 = time.time()
    with tqdm(total=total, unit="tok", unit_scale=True, desc=desc) as bar:
        for chunk in todo:
            writer.write(hidden_states_for(base, chunk, cfg.data.batch_size, hidden_dtype, aux_ids))
            bar.update(sum(len(s[0]) for s in chunk))
    manifest = writer.finish({"num_samples": len(samples), "num_tokens": sum(len(s[0]) for s in samples)})
    manifest["_tokens_per_s"] = total / max(time.time() - t0, 1e-9)
    return manifest


def file_sha256(path: str | None) -> str | None:
    return sha256_file(path) if path and Path(path).is_file() else None


def input_fingerprint(cfg: RunConfig, base: FrozenBase, aux_ids: list[int]) -> dict:
    """Everything the dataset depends on, by content: a conversations file edited in place (or between a kill and
    the resume) no longer matches the dataset made from it."""
    d = cfg.data
    return {"base": base_identity(base, cfg.base.model_name_or_path),
            "conversations_sha256": file_sha256(d.conversations),
            "regenerate": [d.regen_temperature, d.regen_max_new_tokens] if d.regenerate_to else None,
            "regenerated_sha256": file_sha256(d.regenerate_to),
            "chat_template_sha256": file_sha256(d.chat_template), "max_length": d.max_length,
            "max_samples": d.max_samples, "ds_range": d.ds_range, "shard_size": d.shard_size,
            "hidden_dtype": d.hidden_dtype, "aux_layer_ids": aux_ids}


def run(cfg: RunConfig, presets: list[str]) -> Path:
    out_dir = Path(cfg.data.dataset_dir)
    if cfg.data.merge_from:
        manifest = merge_datasets([Path(p) for p in cfg.data.merge_from], out_dir)
        save_resolved_config(cfg, out_dir, "data_gen", presets)
        log.info(f"data_gen: merged {len(cfg.data.merge_from)} datasets → {out_dir} "
              f"({manifest['num_samples']} samples, {len(manifest['shards'])} shards)")
        return out_dir
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = None
    if world > 1 and torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    base = load_base(cfg.base, device=device)
    # The algorithm's drafter may read more base layers than the last (EAGLE-3: three, by default {1, N/2−1, N−4}).
    algo_layers = get_algorithm(cfg.algorithm.name).feature_layers(base.num_layers, cfg.data.aux_layer_ids)
    aux_ids = base.check_layer_ids(algo_layers if algo_layers else cfg.data.aux_layer_ids, "data.aux_layer_ids")
    set_chat_template(base.tokenizer, cfg.data.chat_template)
    if cfg.data.regenerate_to and world > 1:
        raise ConfigError("data.regenerate_to: regenerate in a single process first, then launch the dump")
    convs = training_conversations(base, cfg, "data_gen")
    samples = tokenize_all(base.tokenizer, convs, cfg.data.max_length, "data_gen",
                           cfg.data.regenerate_to or cfg.data.conversations)
    if cfg.data.ds_range is not None:
        if len(cfg.data.ds_range) != 2 or not cfg.data.ds_range[0] <= cfg.data.ds_range[1]:
            raise ConfigError(f"data.ds_range: expected [a, b] with a <= b, got {cfg.data.ds_range}")
        samples = samples[cfg.data.ds_range[0]: cfg.data.ds_range[1]]
    fingerprint = input_fingerprint(cfg, base, aux_ids)
    if world == 1:
        save_resolved_config(cfg, out_dir, "data_gen", presets)
        m = dump(base, cfg, samples, out_dir, {**fingerprint, "num_samples": len(samples)}, aux_ids)
        log.info(f"data_gen: {m['num_samples']} samples, {m['num_tokens']} tokens in {len(m['shards'])} shards → "
              f"{out_dir} ({m['_tokens_per_s']:.0f} tok/s this run)")
        return out_dir
    # Data-parallel: rank r dumps a contiguous slice into parts/, then rank 0 concatenates the parts in order.
    import torch.distributed as dist

    if not dist.is_initialized():  # `accelerate launch` / torchrun set RANK, WORLD_SIZE and MASTER_ADDR/PORT
        dist.init_process_group(backend="nccl" if base.device.type == "cuda" else "gloo")
    per = -(-len(samples) // world)
    part = out_dir / "parts" / f"rank{rank:03d}-of-{world:03d}"
    mine = samples[rank * per: (rank + 1) * per]
    dump(base, cfg, mine, part, {**fingerprint, "part": [rank, world], "num_samples": len(mine)}, aux_ids,
         desc=f"data_gen rank {rank}")
    dist.barrier()
    if rank == 0:
        if (out_dir / MANIFEST).is_file():
            log.info(f"data_gen: {out_dir} is already merged")
        else:
            parts = [out_dir / "parts" / f"rank{r:03d}-of-{world:03d}" for r in range(world)]
            m = merge_datasets(parts, out_dir)
            save_resolved_config(cfg, out_dir, "data_gen", presets)
            log.info(f"data_gen: {world} ranks → {out_dir} ({m['num_samples']} samples, {len(m['shards'])} shards)")
    dist.barrier()
    dist.destroy_process_group()
    return out_dir

if __name__ == "__main__":
    run_entry("data_gen", __doc__.strip().splitlines()[0], run)
