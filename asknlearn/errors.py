"""The one family of user-facing errors: each names the bad value and the valid ones."""


class AskNLearnError(Exception):
    """Bad input from the user; the CLI prints the message and exits with status 2."""

    exit_code = 2


class ConfigError(AskNLearnError, ValueError):
    """An invalid configuration value or key."""


class DatasetError(AskNLearnError, FileNotFoundError):
    """A dataset that is unknown, missing or corrupt on disk."""
