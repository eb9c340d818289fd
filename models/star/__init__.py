"""STAR language models: genomes, LIV operators, backbone and LM (see docs/star-lm.md)."""
