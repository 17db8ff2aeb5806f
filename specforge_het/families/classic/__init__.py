"""Classic draft models (algorithm `classic_draft`, architecture `classic_drafter`): an independent small causal LM
sharing the base's tokenizer, fine-tuned and distilled; the generic tree proposer; exported as a plain HF folder
(`export.to hf`: vLLM draft_model, SGLang STANDALONE); preset `--@classic_draft`."""
from . import export, model, train  # noqa: F401  (importing them registers the family)
