"""DSpark (algorithm `dspark`, architecture `dspark_drafter`): the block-drafter backbone (block_common/) plus a
Markov head and a confidence head; the Markov block proposer; vLLM speculators `dspark` and SGLang
`Qwen3DSparkModel` exports; preset `--@dspark`."""
# Imported by families.load_all: importing them registers the family; this file imports nothing.
REGISTERS = (".export", ".model", ".proposer", ".train")
