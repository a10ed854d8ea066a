"""coinbase (see DESIGN §2)."""
