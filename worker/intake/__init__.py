"""Intake: a file becomes stored evidence (ingest), from the command line, an inbox or moved uploads."""
