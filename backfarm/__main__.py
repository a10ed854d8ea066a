"""``python -m backfarm`` runs the CLI."""

from backfarm.cli import main

main()
