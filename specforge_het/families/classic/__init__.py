"""Classic draft models (algorithm `classic_draft`, architecture `classic_drafter`): an independent small causal LM
sharing the base's tokenizer, fine-tuned and distilled; the generic tree proposer; exported as a plain HF folder
(`export.to hf`: vLLM draft_model, SGLang STANDALONE); preset `--@classic_draft`. A draft LM with another
tokenizer than the base's (`modeling.draft_model_path` holding its own) drafts through the token-level intersection
(cross_vocab.py, vocab_map.py: vLLM's `use_heterogeneous_vocab` rule)."""
# Imported by families.load_all: importing them registers the family; this file imports nothing.
REGISTERS = (".cross_vocab", ".export", ".model", ".string_proposer", ".train")
