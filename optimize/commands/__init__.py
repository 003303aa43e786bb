"""Subcommands of the `optimize` CLI, one module each, each exposing `register(subparsers)`."""
