"""Run the command line as ``python -m pgdblink_safe``."""

from pgdblink_safe.cli import main

main()
