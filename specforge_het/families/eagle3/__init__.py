"""EAGLE-3 / 3.1 (algorithm `eagle3`, architecture `eagle3_drafter`): fused multi-layer base features, one midlayer,
its own (reduced) head, trained by the training-time test; the generic tree proposer; vLLM speculators `eagle3` and
SGLang `LlamaForCausalLMEagle3` exports; presets `--@eagle3`, `--@eagle3_1`."""
# Imported by families.load_all: importing them registers the family; this file imports nothing.
REGISTERS = (".export", ".model", ".train")
