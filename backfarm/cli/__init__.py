"""The Typer CLI."""
