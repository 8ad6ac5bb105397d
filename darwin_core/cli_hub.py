"""Hub subcommands of the `darwin` CLI: push, and (later) search and preflight."""


def add_hub_commands(commands, common) -> None:
    """Register the Hub subcommands on `commands`; `common(sub)` adds --json and --quiet."""
