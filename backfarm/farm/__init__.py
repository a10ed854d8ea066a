"""workers (see DESIGN §2)."""
