"""``python -m modeconn``."""

from modeconn.cli import main

main()
