"""gated_pruning: learned channel pruning with gates (SSS, Huang & Wang 2018, and binary gates)."""

__version__ = "0.1.0"
