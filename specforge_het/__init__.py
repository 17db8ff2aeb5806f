"""specforge_het: train, evaluate and export EAGLE-style speculative-decoding drafters for any HF causal LM."""

__version__ = "0.2.0"
