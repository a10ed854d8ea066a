"""The shared vocabulary: candles, costs, jobs and batches with their ids, the result model, identity versions."""
