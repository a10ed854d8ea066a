"""backfarm's benchmark harness: what `backfarm bench` and `make bench` measure (a tool of the repository)."""
