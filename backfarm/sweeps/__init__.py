"""Sweeps: specs, expansion into jobs and batches, deterministic ids, walk-forward windows."""
