"""DSpark (algorithm `dspark`, architecture `dspark_drafter`): the block-drafter backbone (block_common/) plus a
Markov head and a confidence head; the Markov block proposer; vLLM speculators `dspark` and SGLang
`Qwen3DSparkModel` exports; preset `--@dspark`."""
from . import export, model, proposer, train  # noqa: F401  (importing them registers the family)
