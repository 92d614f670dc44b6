"""``python -m modeconn.cli``."""

from modeconn.cli import main

main()
