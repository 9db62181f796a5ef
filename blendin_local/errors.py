"""The one exception type whose message is meant for the user, as a single line."""


class BlendinError(Exception):
    """Bad input or an unusable file: the CLI prints the message on stderr and exits 1."""
