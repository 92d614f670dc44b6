"""The README stays true: every name its Python examples import exists, every command it lists
is a real CLI command."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from modeconn.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_imports_exist():
    imports = [
        line
        for block in python_blocks()
        for line in block.splitlines()
        if line.startswith("from modeconn")
    ]
    assert len(imports) >= 6
    for line in imports:
        module, names = re.match(r"from (\S+) import (.+)", line).groups()
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(mod, name), f"{module}.{name} (README: {line})"


def test_readme_commands_exist():
    listed = set(re.findall(r"`modeconn ([a-z-]+)", README.read_text()))
    registered = {c.name for c in app.registered_commands}
    assert listed and listed <= registered, listed - registered
