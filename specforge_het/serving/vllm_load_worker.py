"""Loads a speculators `dspark` export with vLLM's own `Qwen3DSparkForCausalLM` and its own `load_weights`, in the
serving environment's python, and checks every parameter against the exported tensors.

    <serving-env>/bin/python vllm_load_worker.py BASE_DIR result.json EXPORT_DIR

Why not serve it: vLLM 0.32 runs DSpark only in its V2 model runner, which needs Triton — absent from the CPU build
(the V1 runner refuses `dspark`). So this builds vLLM's engine config for the base + the export exactly as `vllm serve`
would (the speculators `dspark` config conversion, the draft architecture it picks), telling the config validation
that the V2 runner is in use (two config checks patched; no runner is started), joins a one-rank gloo group, builds the
draft class vLLM builds, fills every parameter with NaN and runs its `load_weights`. Parameters left NaN must be those
vLLM takes from the target (embed_tokens, lm_head) or its unused `mask_embedding` placeholder.
"""
from __future__ import annotations

import json
import os
import sys
import traceback

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# vLLM leaves these unset in a draft: shared from the target at serve time, or (mask_embedding) never read.
NOT_IN_EXPORT = ("embed_tokens", "lm_head", "mask_embedding")


def build_draft(base: str, export_dir: str):
    import torch
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.engine.arg_utils import EngineArgs
    from vllm.model_executor.model_loader.utils import get_model_architecture

    VllmConfig.use_v2_model_runner = property(lambda self: True)
    VllmConfig._validate_v2_model_runner = lambda self: None
    with open(f"{export_dir}/config.json") as f:
        cfg = json.load(f)
    tokens = cfg["speculators_config"]["proposal_methods"][0]["speculative_tokens"]
    spec = {"method": cfg["speculators_model_type"], "model": export_dir, "num_speculative_tokens": tokens}
    vcfg = EngineArgs(model=base, tokenizer=base, dtype="float32", enforce_eager=True, max_model_len=1024,
                      speculative_config=spec).create_engine_config()
    draft_config = vcfg.speculative_config.draft_model_config
    with set_current_vllm_config(vcfg):
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                     distributed_init_method="tcp://127.0.0.1:0")
        initialize_model_parallel(1, 1)
        cls, arch = get_model_architecture(draft_config)
        with torch.device("cpu"):
            return cls(vllm_config=vcfg), arch


def check(base: str, export_dir: str) -> dict:
    from safetensors.torch import load_file

    from sglang_worker import load_and_compare  # the same fused layouts (qkv_proj, gate_up_proj), `model.` prefix

    model, arch = build_draft(base, export_dir)
    return load_and_compare(model, load_file(f"{export_dir}/model.safetensors"), arch, "vLLM", shared=NOT_IN_EXPORT)


def main(base: str, out_path: str, export_dir: str) -> None:
    try:
        report = check(base, export_dir)
    except Exception as e:
        report = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    with open(out_path, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
