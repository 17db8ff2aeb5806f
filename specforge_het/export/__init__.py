"""export: convert a drafter checkpoint into a serving format (or import an official EAGLE checkpoint).

    python -m specforge_het.export --export.checkpoint DIR --export.to sglang --export.out DIR [--export.dtype bfloat16]

Formats (`export.to`):
  specforge_het  our own: model.safetensors + drafter_config.json, loadable with `load_drafter(path)`
  sglang         SGLang's EAGLE-3 (LlamaForCausalLMEagle3) or EAGLE-1/2 (Llama/Qwen2/MistralForCausalLMEagle)
                 layout + README.md with the launch command; loaded by SGLang's own class and load_weights when the
                 serving environment is built (python -m specforge_het.serving.env), else checked against SGLang's
                 sources read statically
  vllm           vLLM's speculators eagle3 format (any width, llama or qwen3 midlayer) or its eagle method
                 (EAGLE-1/2, fc without bias) + README.md with the `vllm serve` command
`export.checkpoint` may also be an official EAGLE-1/2 or EAGLE-3 checkpoint (config.json + weights, .safetensors or
.bin): it is imported, so `--export.to specforge_het` makes it usable by inference and train.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import RunConfig, save_resolved_config
from ..config.schema import ConfigError, closest
from ..modeling.base import resolve_dtype
from ..modeling.drafter_base import CONFIG_NAME, load_drafter

FORMATS = ("specforge_het", "sglang", "vllm")

log = logging.getLogger(__name__)
PLANNED = {"hf": "a plain HF folder"}


def load_any(checkpoint: str, feature_layers=None):
    """Our format, or an official EAGLE / SGLang-layout checkpoint (imported)."""
    if (Path(checkpoint) / CONFIG_NAME).is_file():
        return load_drafter(checkpoint)
    from .from_official import load_official

    return load_official(checkpoint, feature_layers)


def export_specforge_het(drafter, out: str, dtype) -> Path:
    out_path = drafter.save_pretrained(out, dtype=dtype)
    # Validate what we wrote by reading it back: every key present, same shapes.
    again = load_drafter(out_path)
    want = {k: v.shape for k, v in drafter.state_dict().items() if "rotary_emb." not in k}
    got = {k: v.shape for k, v in again.state_dict().items() if "rotary_emb." not in k}
    if want != got:
        raise RuntimeError(f"export to {out_path} did not round-trip: keys/shapes differ")
    return out_path


def run(cfg: RunConfig, presets: list[str]) -> Path:
    ex = cfg.export
    if ex.to in PLANNED:
        raise ConfigError(f"export.to {ex.to!r} ({PLANNED[ex.to]}) is not implemented in this release; "
                          f"available: {', '.join(FORMATS)}")
    if ex.to not in FORMATS:
        raise ConfigError(f"export.to: unknown format {ex.to!r}; {closest(ex.to, FORMATS + tuple(PLANNED))}")
    if Path(ex.out).resolve() == Path(ex.checkpoint).resolve():
        raise ConfigError("export.out must differ from export.checkpoint")
    drafter = load_any(ex.checkpoint, ex.feature_layers)
    dtype = resolve_dtype(ex.dtype, "export.dtype") if ex.dtype else None
    base = ex.base_model or drafter.meta.get("base_model_name_or_path") or "BASE_MODEL"
    out = Path(ex.out)
    if ex.to in ("sglang", "vllm"):
        from .capture import base_num_layers, check_capture

        check_capture(getattr(drafter, "feature_layers", None), base_num_layers(drafter, base), ex.to)
    if ex.to == "specforge_het":
        out = export_specforge_het(drafter, ex.out, dtype)
    elif ex.to == "sglang":
        from .to_sglang import export_sglang

        export_sglang(drafter, out, dtype, base, ex.num_steps, ex.topk, ex.num_draft_tokens)
        check = _check_sglang(out, base)
        log.info(f"export: SGLang check: {check}")
    else:
        from .to_vllm import export_vllm

        export_vllm(drafter, out, dtype, base, ex.num_steps)
    save_resolved_config(cfg, out, "export", presets)
    log.info(f"export: {ex.checkpoint} → {out} ({ex.to}, algorithm {drafter.meta.get('algorithm')}, base {base})")
    return out


def _check_sglang(out: Path, base: str) -> str:
    """SGLang's own draft class loading the export with its own load_weights, when the serving environment is built
    (python -m specforge_het.serving.env); otherwise the static reading of SGLang's sources (sglang_check.py)."""
    from ..serving import env

    if env.is_ready():
        from ..serving import check_with_sglang

        report = check_with_sglang([out], base)[0]
        if report.get("error") or report["problems"]:
            raise ConfigError(f"{out}: SGLang's own {report.get('architecture', 'draft class')} does not load this "
                              f"export: {report.get('error') or '; '.join(report['problems'][:5])}")
        return (f"SGLang's {report['architecture']}.load_weights filled {report['checked']} parameters with the "
                "exported tensors" + (f"; from the target: {', '.join(report['from_target'])}"
                                      if report["from_target"] else ""))
    from .sglang_check import check_sglang_export, sglang_models_dir

    try:
        sglang_models_dir()
    except ConfigError as e:
        return f"skipped ({e})"
    summary = check_sglang_export(out)
    return (f"{summary['keys']} keys map onto {summary['architecture']}'s parameters"
            + (f"; from the target: {', '.join(summary['from_target'])}" if summary["from_target"] else ""))
