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

from ..utils.lazy import lazy_names

# The stage's names resolve on first use: the families import export.registry / export.formats, which must not
# load the stage (and the command line with it).
__getattr__ = lazy_names(__name__, dict.fromkeys(("run", "load_any", "export_specforge_het"), "stage"))
