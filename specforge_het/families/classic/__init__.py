"""Classic draft models (algorithm `classic_draft`, architecture `classic_drafter`): an independent small causal LM
sharing the base's tokenizer, fine-tuned and distilled; the generic tree proposer; exported in our own format only
(no engine format yet); preset `--@classic_draft`."""
from . import model, train  # noqa: F401  (importing them registers the family)
