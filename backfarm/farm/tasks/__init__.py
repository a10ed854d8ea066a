"""tasks (see DESIGN §2)."""
