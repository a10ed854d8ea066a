"""paper (see DESIGN §2)."""
