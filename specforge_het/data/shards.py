"""Sharded hidden-state datasets on disk: safetensors shards + a JSON manifest.

Shard k holds samples [k*shard_size, (k+1)*shard_size) of the source, concatenated:
  input_ids [T] int32, loss_mask [T] uint8, hidden [T, H] (bf16 by default), offsets [n+1] int64.
Shards are written atomically and the manifest (with each shard's sha256) is rewritten after each one,
so a killed run resumes at the first missing shard with nothing lost or duplicated.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config.errors import ConfigError
from ..utils.io import atomic_write, atomic_write_json, sha256_file

MANIFEST = "manifest.json"
FORMAT = "specforge_het.hidden_states"


def shard_name(k: int) -> str:
    return f"shard_{k:05d}.safetensors"


class ShardWriter:
    """Appends shards to a dataset folder; refuses to mix datasets made with different settings."""

    def __init__(self, out_dir: str | Path, shard_size: int, fingerprint: dict, meta: dict):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / MANIFEST
        if self.path.is_file():
            manifest = json.loads(self.path.read_text())
            old = manifest.get("fingerprint") or {}
            if old != fingerprint:
                changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
                raise ConfigError(
                    f"{self.dir} already holds a{'n unfinished' if not manifest.get('complete') else ''} dataset made "
                    f"from other inputs or settings (changed: {', '.join(changed)}); delete that folder to rebuild it, "
                    "or choose another data.dataset_dir")
            self.manifest = manifest
        else:
            self.manifest = {"format": FORMAT, "format_version": 1, "shard_size": shard_size,
                             "fingerprint": fingerprint, "complete": False, "shards": [], **meta}

    @property
    def done_shards(self) -> int:
        return len(self.manifest["shards"])

    def write(self, samples: list[dict]) -> None:
        """samples: dicts of input_ids [T] int, loss_mask [T], hidden [T, H]."""
        k = self.done_shards
        lengths = [len(s["input_ids"]) for s in samples]
        offsets = torch.tensor([0] + lengths).cumsum(0)
        tensors = {
            "input_ids": torch.cat([s["input_ids"] for s in samples]).to(torch.int32),
            "loss_mask": torch.cat([s["loss_mask"] for s in samples]).to(torch.uint8),
            "hidden": torch.cat([s["hidden"] for s in samples]).contiguous(),
            "offsets": offsets.to(torch.int64),
        }
        if "aux_hidden" in samples[0]:
            tensors["aux_hidden"] = torch.cat([s["aux_hidden"] for s in samples]).contiguous()
        path = self.dir / shard_name(k)
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
        self.manifest["shards"].append({"file": path.name, "num_samples": len(samples),
                                        "num_tokens": int(offsets[-1]), "sha256": sha256_file(path)})
        atomic_write_json(self.path, self.manifest)

    def finish(self, extra: dict) -> dict:
        self.manifest.update(extra)
        self.manifest["complete"] = True
        atomic_write_json(self.path, self.manifest)
        return self.manifest


class HiddenStateDataset(torch.utils.data.Dataset):
    """Random access over the samples of a shard set; each shard's checksum is verified on first use."""

    def __init__(self, data_dir: str | Path, verify: bool = True):
        self.dir = Path(data_dir)
        mpath = self.dir / MANIFEST
        if not mpath.is_file():
            raise ConfigError(f"no dataset at {self.dir} (missing {MANIFEST}); run specforge_het.data_gen first")
        try:
            self.manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{mpath} is not valid JSON: {e}") from None
        if self.manifest.get("format") != FORMAT:
            raise ConfigError(f"{mpath}: field 'format' is {self.manifest.get('format')!r}, expected {FORMAT!r}")
        if not self.manifest.get("complete"):
            raise ConfigError(f"{self.dir}: dataset is incomplete (data_gen was interrupted); rerun the same "
                              "data_gen command to resume it")
        self.verify = verify
        self._open: dict[int, tuple] = {}
        self._check_counts(mpath)
        self.index = [(k, i) for k, sh in enumerate(self.manifest["shards"]) for i in range(sh["num_samples"])]

    def _check_counts(self, mpath: Path) -> None:
        """The manifest against its shards, at open: every listed shard present with the samples and tokens it
        claims (read from its header, not its data), and the top-level totals equal to their sums — so an edited
        count or a deleted entry never silently drops samples."""
        shards = self.manifest.get("shards")
        if not isinstance(shards, list) or not shards:
            raise ConfigError(f"{mpath}: field 'shards' must be a non-empty list of shard entries")
        for k, info in enumerate(shards):
            path = self.dir / str(info.get("file"))
            if not path.is_file():
                raise ConfigError(f"dataset shard {path} (entry {k} of {mpath}) is missing")
            try:
                with safe_open(str(path), framework="pt") as f:
                    offsets = f.get_tensor("offsets")
            except Exception as e:  # safetensors raises its own error types for bad headers
                raise ConfigError(f"dataset shard {path} is corrupt or truncated (its header cannot be read: "
                                  f"{e})") from None
            if offsets.numel() - 1 != info.get("num_samples") or int(offsets[-1]) != info.get("num_tokens"):
                raise ConfigError(f"{mpath}: shard entry {k} claims {info.get('num_samples')} samples / "
                                  f"{info.get('num_tokens')} tokens, but {path.name} holds {offsets.numel() - 1} / "
                                  f"{int(offsets[-1])}")
        for key in ("num_samples", "num_tokens"):
            total = sum(info[key] for info in shards)
            if self.manifest.get(key) != total:
                raise ConfigError(f"{mpath}: field {key!r} is {self.manifest.get(key)}, but its shards hold {total} "
                                  "(edited or truncated manifest); rerun data_gen into an empty folder")

    def __len__(self) -> int:
        return len(self.index)

    def _shard(self, k: int):
        if k not in self._open:
            info = self.manifest["shards"][k]
            path = self.dir / info["file"]
            if not path.is_file():
                raise ConfigError(f"dataset shard {path} is missing")
            if self.verify and sha256_file(path) != info["sha256"]:
                raise ConfigError(f"dataset shard {path} is corrupt or truncated (sha256 differs from "
                                  f"{self.dir / MANIFEST})")
            try:
                f = safe_open(str(path), framework="pt")
                offsets = f.get_tensor("offsets")
            except Exception as e:  # safetensors raises its own error types for bad headers
                raise ConfigError(f"dataset shard {path} cannot be read: {e}") from None
            self._open[k] = (f, offsets)
        return self._open[k]

    def __getitem__(self, idx: int) -> dict:
        k, i = self.index[idx]
        f, offsets = self._shard(k)
        a, b = int(offsets[i]), int(offsets[i + 1])
        sample = {
            "input_ids": f.get_slice("input_ids")[a:b].long(),
            "loss_mask": f.get_slice("loss_mask")[a:b].long(),
            "hidden": f.get_slice("hidden")[a:b],
        }
        if self.manifest.get("aux_layer_ids"):
            sample["aux_hidden"] = f.get_slice("aux_hidden")[a:b]
        return sample

    def token_arrays(self):
        """(input_ids, loss_mask) of every sample, shard by shard without touching the hidden states."""
        for k in range(len(self.manifest["shards"])):
            f, offsets = self._shard(k)
            ids, mask = f.get_tensor("input_ids").long(), f.get_tensor("loss_mask").long()
            for i in range(offsets.numel() - 1):
                a, b = int(offsets[i]), int(offsets[i + 1])
                yield ids[a:b], mask[a:b]

    def __getstate__(self):  # open file handles stay in the process that made them
        state = dict(self.__dict__)
        state["_open"] = {}
        return state


def collate(samples: list[dict]) -> dict:
    """Right-pad a list of samples into a batch (padding is loss-masked; causal attention never sees it).
    `attention_mask` marks the real tokens (online training runs the base on the batch)."""
    T = max(len(s["input_ids"]) for s in samples)
    batch = {"attention_mask": torch.zeros(len(samples), T, dtype=torch.long)}
    for key, first in samples[0].items():
        batch[key] = torch.zeros(len(samples), T, *first.shape[1:], dtype=first.dtype)
    for j, s in enumerate(samples):
        n = len(s["input_ids"])
        batch["attention_mask"][j, :n] = 1
        for key, value in s.items():
            batch[key][j, :n] = value
    return batch


COMPATIBLE_KEYS = ("hidden_size", "hidden_dtype", "aux_layer_ids", "base")


def merge_datasets(sources: list[Path], out_dir: Path) -> dict:
    """Concatenate complete shard sets, in the order given, into out_dir (checksums verified on the way).
    Shards are copied (hard-linked where possible) first and the manifest written last, so an interrupted
    merge leaves no manifest that claims more than is there; a finished merge of the same shards is reused."""
    manifests = []
    for src in sources:
        m = HiddenStateDataset(src, verify=False).manifest  # checks format and completeness
        for key in COMPATIBLE_KEYS:
            if manifests and m.get(key) != manifests[0][1].get(key):
                raise ConfigError(f"cannot merge {src} with {manifests[0][0]}: '{key}' differs "
                                  f"({m.get(key)!r} vs {manifests[0][1].get(key)!r})")
        manifests.append((src, m))
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MANIFEST).is_file():  # a rerun of the same merge (a script run again) reuses it
        existing = json.loads((out_dir / MANIFEST).read_text())
        wanted = [i["sha256"] for _, m in manifests for i in m["shards"]]
        if existing.get("fingerprint", {}).get("merged_from") == [str(s) for s, _ in manifests] and \
                [i["sha256"] for i in existing.get("shards", [])] == wanted:
            return existing
        raise ConfigError(f"{out_dir} already holds another dataset; merge into an empty folder")
    shards = []
    for src, m in manifests:
        for info in m["shards"]:
            path = src / info["file"]
            if not path.is_file() or sha256_file(path) != info["sha256"]:
                raise ConfigError(f"dataset shard {path} is missing, corrupt or truncated (sha256 mismatch)")
            dst = out_dir / shard_name(len(shards))
            tmp = dst.with_name(dst.name + ".tmp")
            try:
                os.link(path, tmp)
            except OSError:
                shutil.copyfile(path, tmp)
            os.replace(tmp, dst)
            shards.append({**info, "file": dst.name})
    first = manifests[0][1]
    merged = {"format": FORMAT, "format_version": 1, "shard_size": first["shard_size"], "complete": True,
              "fingerprint": {"merged_from": [str(s) for s, _ in manifests]}, "shards": shards,
              **{k: first.get(k) for k in COMPATIBLE_KEYS},
              "num_samples": sum(m["num_samples"] for _, m in manifests),
              "num_tokens": sum(m["num_tokens"] for _, m in manifests)}
    atomic_write_json(out_dir / MANIFEST, merged)
    return merged
