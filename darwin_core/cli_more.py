"""Subcommands beyond the core five: evolve, lineage, push and the Hub helpers.

They live in their own modules so cli.py stays short; each adds its parsers to the shared
subparsers object.
"""


def add_more_commands(commands, common, parent_options) -> None:
    """Register the extra subcommands on `commands` (an argparse subparsers object)."""
    from .cli_evolve import add_evolve_commands
    from .cli_hub import add_hub_commands

    add_evolve_commands(commands, common, parent_options)
    add_hub_commands(commands, common)
