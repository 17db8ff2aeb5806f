"""EAGLE-1/2 (algorithm `eagle2`, architecture `eagle_drafter`): fc over [embedding, base feature] → decoder
layer(s) → the next base feature; feature regression + soft CE; the generic tree proposer; vLLM `eagle` and SGLang
`*ForCausalLMEagle` exports; preset `--@eagle2`."""
# Imported by families.load_all: importing them registers the family; this file imports nothing.
REGISTERS = (".export", ".model", ".train")
