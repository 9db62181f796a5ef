"""The `blendin` command's entry point, and `python -m blendin_local`.

The command line's modules take about half a second to import (numpy, llama.cpp's bindings,
click). A Ctrl-C in that time is an interrupt like any later one, one line and exit 130: caught
here, around the import, since nothing of the command line exists yet to catch it.
"""

import sys


def main() -> None:
    try:
        from blendin_local.interfaces.cli import main as run_command_line
    except KeyboardInterrupt:
        sys.stderr.write("\nblendin: interrupted\n")
        raise SystemExit(130) from None
    run_command_line()


if __name__ == "__main__":
    main()
