"""Strategies: the causal target-exposure contract, indicators, the built-ins and the registry."""
