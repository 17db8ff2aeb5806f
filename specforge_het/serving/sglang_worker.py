"""Loads an SGLang-format draft export with SGLang's own draft class and its own `load_weights`, in the serving
environment's python (SGLang installed without dependencies; not importable from specforge_het), and checks that
every parameter of the built model holds exactly the exported tensor.

    <serving-env>/bin/python sglang_worker.py BASE_DIR result.json EXPORT_DIR [EXPORT_DIR ...]

SGLang's kernels need CUDA, so two imports are stubbed — never weight-name logic: `torchvision` (CUDA-linked; SGLang's
multimodal config modules import it at load time; transformers is told first that it is absent) — and the process
joins a one-rank gloo group. Every parameter is filled with NaN before `load_weights`, so a parameter the loader
never writes is caught; parameters SGLang takes from the target model (a shared embedding / lm_head) are listed.
The expected value of each parameter is built here from the export independently: q/k/v stacked into qkv_proj,
gate/up into gate_up_proj (SGLang's fused layouts), `midlayer.` → `model.layers.0.`, other names under `model.`
(or at the top level, for SGLang's DFlash / DSpark draft modules, which have no `model.`).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
import traceback
import types

# SGLang builds a DSpark draft's confidence head only in its ragged-verify modes (the head decides how much of each
# block to verify); in the default "static" mode it skips those weights. cap-accept: so the head is loaded and checked.
os.environ.setdefault("SGLANG_RAGGED_VERIFY_MODE", "cap-accept")
STACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


class _Anything(types.ModuleType):
    """A stub module: any attribute is another stub, calling one returns None."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        return None

    def __mro_entries__(self, bases):
        return (object,)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, prefixes):
        self.prefixes = prefixes

    def find_spec(self, name, path=None, target=None):
        if any(name == p or name.startswith(p + ".") for p in self.prefixes):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Anything(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def setup_sglang(base_path: str):
    """Import SGLang's model code on a CPU-only machine and publish a one-rank, CPU runtime context."""
    import transformers.utils.import_utils as iu

    iu.is_torchvision_available()  # transformers decides "no torchvision" before the stub exists
    sys.meta_path.insert(0, _StubFinder(["torchvision"]))
    from sglang.srt.distributed import parallel_state
    from sglang.srt.runtime_context import get_context, get_parallel

    get_context().override_server_args(device="cpu", model_path=base_path, tp_size=1).install()
    parallel_state.init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                                distributed_init_method="tcp://127.0.0.1:0")
    parallel_state.initialize_model_parallel()
    get_parallel().override_permanently(tp_rank=0, pp_rank=0, attn_tp_rank=0, attn_dp_rank=0, moe_ep_rank=0,
                                        moe_tp_rank=0, moe_dp_rank=0, attn_cp_rank=0, dp_rank=0)


def draft_class(arch: str):
    import importlib

    modules = {"LlamaForCausalLMEagle3": "llama_eagle3", "LlamaForCausalLMEagle": "llama_eagle",
               "Qwen2ForCausalLMEagle": "qwen2_eagle", "MistralForCausalLMEagle": "mistral_eagle",
               "DFlashDraftModel": "dflash", "Qwen3DSparkModel": "dspark"}
    return getattr(importlib.import_module(f"sglang.srt.models.{modules[arch]}"), arch)


def expected_params(weights: dict, model_names: set) -> dict:
    """Our reading of SGLang's layout, applied to the export: param name → tensor."""
    import torch

    out, parts = {}, {}
    for key, value in weights.items():
        if key in ("d2t", "t2d"):
            continue
        name = key.replace("midlayer.", "layers.0.")
        if not name.startswith("lm_head."):
            name = "model." + name
        for fused, pieces in STACKED.items():
            for i, piece in enumerate(pieces):
                if f".{piece}." in name:
                    parts.setdefault(name.replace(piece, fused), {})[i] = value
                    break
            else:
                continue
            break
        else:
            out[name] = value
    for name, pieces in parts.items():
        out[name] = torch.cat([pieces[i] for i in sorted(pieces)], dim=0)
    # The DFlash / DSpark drafts are SGLang's top-level modules: their parameters carry no `model.` prefix.
    unprefixed = {k: k.removeprefix("model.") for k in out}
    return {(unprefixed[k] if k not in model_names and unprefixed[k] in model_names else k): v
            for k, v in out.items()}


def load_and_compare(model, weights: dict, arch: str, engine: str, shared: tuple) -> dict:
    """Fill every parameter of the engine's draft `model` with NaN, run its own load_weights on the exported
    tensors, and compare each parameter with what the export says it should hold → the report. Parameters the
    loader leaves untouched are allowed only when their name holds one of `shared` (taken from the target)."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for p in params.values():
            if p.is_floating_point():
                p.fill_(float("nan"))
    model.load_weights(list(weights.items()))
    want = expected_params(weights, set(params))
    report = {"architecture": arch, "parameters": len(params), "checked": 0, "problems": [], "from_target": []}
    for name, p in params.items():
        if name not in want:
            if bool(torch.isnan(p).all()) and any(k in name for k in shared):
                report["from_target"].append(name)  # the engine shares these with the target model at serve time
            else:
                report["problems"].append(f"{name}: no exported tensor maps to it")
        elif tuple(p.shape) != tuple(want[name].shape):
            report["problems"].append(f"{name}: {engine} shape {list(p.shape)}, export {list(want[name].shape)}")
        elif not torch.equal(p.detach().cpu(), want[name].to(p.dtype)):
            report["problems"].append(f"{name}: after load_weights it differs from the exported tensor")
        else:
            report["checked"] += 1
    for name in set(want) - set(params):
        report["problems"].append(f"{name}: exported but {engine}'s {arch} has no such parameter")
    return report


def share_tied_target(model, arch: str, report: dict) -> None:
    """What SGLang's EAGLE worker (eagle_worker_v2) does after loading: hand the target's embedding — and, except
    for an EAGLE-3 draft with its own head, its lm_head — to the draft. The target here ties them (one tensor, as
    SmolLM2 does): a draft config that ties its own embedding and head fails in set_embed_and_head."""
    import torch

    embed = dict(model.named_parameters()).get("model.embed_tokens.weight")
    if embed is None:  # block drafters (DFlash, DSpark) hold no embedding of their own
        report["shares_tied_target"] = "none"
        return
    tied = torch.nn.Parameter(torch.randn(embed.shape, dtype=embed.dtype), requires_grad=False)
    own_head = "Eagle3" in arch and not getattr(model, "load_lm_head_from_target", False)
    call = "set_embed" if own_head else "set_embed_and_head"
    try:
        model.set_embed(tied) if own_head else model.set_embed_and_head(tied, tied)
    except Exception as e:
        report["problems"].append(f"{call} with a tied target's embedding and head: {type(e).__name__}: {e}")
        return
    report["shares_tied_target"] = call


def check(export_dir: str) -> dict:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig

    with open(f"{export_dir}/config.json") as f:
        cfg = json.load(f)
    arch = cfg["architectures"][0]
    config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k != "model_type"}, model_type=cfg.get(
        "model_type", "llama"))
    model = draft_class(arch)(config)
    weights = load_file(f"{export_dir}/model.safetensors")
    report = load_and_compare(model, weights, arch, "SGLang", shared=("embed_tokens", "lm_head"))
    share_tied_target(model, arch, report)
    if "d2t" in weights:  # SGLang keeps the draft → target map as hot_token_id = arange + d2t
        hot = getattr(model, "hot_token_id", None)
        mapped = torch.arange(weights["d2t"].numel()) + weights["d2t"]
        if hot is None or not torch.equal(hot.cpu().long(), mapped):
            report["problems"].append("d2t: SGLang's hot_token_id is not arange(draft_vocab) + d2t")
        else:
            report["checked"] += 1
    return report


def main(base_path: str, out_path: str, export_dirs: list[str]) -> None:
    setup_sglang(base_path)
    reports = {}
    for export_dir in export_dirs:  # one process for all: SGLang's import and runtime setup are paid once
        try:
            reports[export_dir] = check(export_dir)
        except Exception as e:
            reports[export_dir] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    with open(out_path, "w") as f:
        json.dump(reports, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
