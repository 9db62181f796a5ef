"""The one exception type whose message is meant for the user, as a single line, and the install
hint such messages give."""


class BlendinError(Exception):
    """Bad input or an unusable file: the CLI prints the message on stderr and exits 1."""


def install_hint(extra: str) -> str:
    """How to add an optional extra, the way README.md installs the project: from its folder (the
    project is not on PyPI, and a package of its name there would be someone else's)."""
    return f"pip install -e '.[{extra}]' in the blendin_local project folder"
