"""Result stores (SQLite embedded, Redis for the farm) behind one contract, with ranking and aggregation."""
