"""The bottom layer: ids and canonical JSON, time helpers, CPU counts, small SQLite and Redis helpers."""
