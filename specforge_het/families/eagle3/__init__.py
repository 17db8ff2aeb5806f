"""EAGLE-3 / 3.1 (algorithm `eagle3`, architecture `eagle3_drafter`): fused multi-layer base features, one midlayer,
its own (reduced) head, trained by the training-time test; the generic tree proposer; vLLM speculators `eagle3` and
SGLang `LlamaForCausalLMEagle3` exports; presets `--@eagle3`, `--@eagle3_1`."""
from . import export, model, train  # noqa: F401  (importing them registers the family)
