"""Export an EAGLE-3 draft to vLLM's speculators format (`Eagle3Speculator`), which vLLM serves unmodified:

    vllm serve BASE --speculative-config '{"method": "eagle3", "model": DRAFT, "num_speculative_tokens": 5}'

Layer keys are `layers.0.*`; vLLM needs the draft width to equal the verifier's, so other widths are refused.
vLLM's aux-layer id k means the output of block k−1 (ours: of block k), so ids are written +1.
Checked against the speculators config schema (vLLM's sources are not installable on a CPU machine).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from ..config.schema import ConfigError
from ..utils.io import atomic_write, atomic_write_json, atomic_write_text
from .to_sglang import eagle3_to_sglang

REQUIRED_CONFIG = ("speculators_model_type", "architectures", "transformer_layer_config", "draft_vocab_size",
                   "speculators_config")


def export_vllm(drafter, out: Path, dtype: Optional[torch.dtype], base: str, steps: int) -> Path:
    from ..modeling.eagle3 import Eagle3Drafter

    if not isinstance(drafter, Eagle3Drafter):
        raise ConfigError("vLLM export writes the speculators eagle3 format; this is an EAGLE-1/2 or classic draft")
    if drafter.hf_config.hidden_size != drafter.base_hidden_size:
        raise ConfigError(f"vLLM's Eagle3Speculator needs the draft width to equal the verifier's; this draft is "
                          f"{drafter.hf_config.hidden_size} wide over a {drafter.base_hidden_size}-wide base — "
                          "export it to SGLang (which honours target_hidden_size) instead")
    sg_config, sg_weights = eagle3_to_sglang(drafter, dtype)
    weights = {k.replace("midlayer.", "layers.0."): v for k, v in sg_weights.items()}
    layer_cfg = {k: v for k, v in sg_config.items()
                 if k not in ("architectures", "draft_vocab_size", "eagle_config", "torch_dtype", "target_hidden_size")}
    layer_cfg["architectures"] = ["LlamaForCausalLM"]
    config = {
        "speculators_model_type": "eagle3",
        "architectures": ["Eagle3Speculator"],
        "transformer_layer_config": layer_cfg,
        "draft_vocab_size": drafter.draft_vocab_size or drafter.base_vocab_size,
        "norm_before_residual": False,
        "eagle_aux_hidden_state_layer_ids": [k + 1 for k in drafter.feature_layers],
        "speculators_config": {
            "algorithm": "eagle3",
            "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": steps}],
            "default_proposal_method": "greedy",
            "verifier": {"name_or_path": base, "architectures": []},
        },
        "torch_dtype": sg_config["torch_dtype"],
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", lambda tmp: save_file(weights, tmp, metadata={"format": "pt"}))
    atomic_write_json(out / "config.json", config)
    atomic_write_text(out / "README.md", f"""# EAGLE-3 draft for vLLM (speculators format)

```bash
vllm serve {base} --speculative-config '{{"method": "eagle3", "model": "{out}", "num_speculative_tokens": {steps}}}'
```
""")
    return out
