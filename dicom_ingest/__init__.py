"""Shared contracts of the pipeline: message, ports, flags, logging and the CLI."""
