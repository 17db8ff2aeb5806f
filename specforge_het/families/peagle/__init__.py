"""P-EAGLE, parallel EAGLE (algorithm `peagle`, architecture `peagle_drafter`): an EAGLE-3 drafter of one or more
layers that drafts all k tokens in one forward — slot 1 is an ordinary EAGLE-3 step (the last committed base
features and the token after them), slots 2..k hold a mask token's embedding and a learned `mask_hidden` in place
of base features; its own "parallel" proposer; vLLM's speculators `peagle` export (served as `eagle3` with
`parallel_drafting`); preset `--@peagle`."""
# Imported by families.load_all: importing them registers the family; this file imports nothing.
REGISTERS = (".export", ".model", ".proposer", ".train")
