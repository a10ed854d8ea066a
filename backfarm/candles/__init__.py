"""Candles: one schema, a monthly Parquet cache, and the sources that fill it (synthetic, file, coinbase)."""
