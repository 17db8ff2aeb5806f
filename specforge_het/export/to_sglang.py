"""Export to SGLang's draft formats (0.5.x), which SGLang serves unmodified. Each drafter family registers its
converter for target "sglang" (families/NAME/export.py: the draft class its config names, its tensors, and its
launch command when it is not the EAGLE one below); only drafts SGLang computes identically are written, anything
else is refused with what SGLang lacks. `verify` proves an export with SGLang's own load_weights when the serving
environment is built, else by our reading of SGLang's sources (its EAGLE layouts).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from ..config.errors import ConfigError
from ..utils.io import atomic_write_text
from .registry import Exporter, converters_for, register_exporter, write_converted


def eagle_readme(config: dict, base: str, draft_dir: Path, steps: int, topk: int, tokens: int) -> str:
    """The launch command of an EAGLE-style draft (a converter without its own README)."""
    arch = config["architectures"][0]
    eagle3 = arch.endswith("Eagle3")
    algo = "EAGLE3" if eagle3 else "EAGLE"
    return f"""# Draft model for SGLang ({config['architectures'][0]})

Exported by specforge_het. Serve it next to its base model with:

```bash
python -m sglang.launch_server --model-path {base} \\
  --speculative-algorithm {algo} --speculative-draft-model-path {draft_dir} \\
  --speculative-num-steps {steps} --speculative-eagle-topk {topk} --speculative-num-draft-tokens {tokens}
```

`--speculative-algorithm {algo}` must match the format: serving {'an EAGLE-3' if eagle3 else 'an EAGLE-1/2'} draft with
`{'EAGLE' if eagle3 else 'EAGLE3'}` silently accepts nothing (τ = 1.0).
"""


def export_sglang(drafter, out: Path, dtype: Optional[torch.dtype], base: str, steps: int, topk: int,
                  tokens: int) -> Path:
    converter, config = write_converted("sglang", drafter, out, dtype, base, steps)
    atomic_write_text(out / "README.md", (converter.readme or eagle_readme)(config, base, out, steps, topk, tokens))
    return out


def verify_sglang(out: Path, base: str) -> str:
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

    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    if not any(c.static_check for c in converters_for("sglang").values() if arch in c.engine_architectures):
        return (f"skipped (the static reading of SGLang's sources covers its EAGLE layouts; {arch} is checked by "
                "SGLang's own load_weights once the serving environment is built: python -m specforge_het.serving.env)")
    try:
        sglang_models_dir()
    except ConfigError as e:
        return f"skipped ({e})"
    summary = check_sglang_export(out)
    return (f"{summary['keys']} keys map onto {summary['architecture']}'s parameters"
            + (f"; from the target: {', '.join(summary['from_target'])}" if summary["from_target"] else ""))


def _write(drafter, out: Path, dtype, base: str, ex) -> Path:
    return export_sglang(drafter, out, dtype, base, ex.num_steps, ex.topk, ex.num_draft_tokens)


EXPORTER = register_exporter(Exporter(
    "sglang", "SGLang 0.5's draft layouts + README.md with the launch command", False, _write, verify_sglang))
