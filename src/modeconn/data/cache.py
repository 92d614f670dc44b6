"""A cache of decoded images: uint8 arrays in an uncompressed ``.npz``, reused while the files stay.

Decoding tens of thousands of PNG/JPEG files takes seconds to minutes; reading the same pixels back
from one ``.npz`` takes a fraction of a second. An entry's name carries two hashes:

* the *options* hash (the reader's settings, and the data folder itself when the cache is shared
  by several folders), so one folder read with different settings keeps one entry per setting;
* the *content* hash (every file's relative path, size and modification time), so adding,
  removing, replacing or touching a file makes the entry stale. A new entry replaces the stale
  entries of the same options.

Writes go to a temporary file in the cache folder and are moved into place with
:func:`os.replace`, so a reader never sees half an entry. Entries are read with
``allow_pickle=False``: a cache folder is a file system location like any other, and modeconn never
unpickles. An entry that cannot be read is treated as missing and written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

LOCAL_CACHE_NAME = ".modeconn-cache"
CACHE_ENV_VAR = "XDG_CACHE_HOME"


def _writable_dir(path: Path) -> bool:
    """Create ``path`` if needed; True when files can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/modeconn``, or ``~/.cache/modeconn`` when the variable is unset."""
    base = os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache"
    return Path(base) / "modeconn"


def default_cache_dir(root: Path) -> Path | None:
    """Where the images of data folder ``root`` are cached: ``root/.modeconn-cache`` when it can be
    written, else the user's cache folder (:func:`user_cache_dir`), else nowhere (None)."""
    for candidate in (root / LOCAL_CACHE_NAME, user_cache_dir()):
        if _writable_dir(candidate):
            return candidate
    return None


def content_hash(lines: Sequence[str]) -> str:
    """Hex digest of the files' ``relative path\\0size\\0mtime`` lines, in the order given."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def options_hash(options: Mapping[str, object]) -> str:
    """Hex digest of the JSON form of ``options`` (keys sorted)."""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


def entry_path(cache_dir: Path, options_key: str, content_key: str) -> Path:
    """The file of one cache entry: ``images-<options>-<content>.npz`` (16 hex digits each)."""
    return cache_dir / f"images-{options_key[:16]}-{content_key[:16]}.npz"


def read_entry(path: Path, names: Iterable[str]) -> dict[str, np.ndarray] | None:
    """The arrays ``names`` of the entry at ``path``, or None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as entry:
            return {name: entry[name] for name in names}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def write_entry(path: Path, arrays: Mapping[str, np.ndarray]) -> bool:
    """Write ``arrays`` to ``path`` atomically and delete the stale entries of the same options.

    A failure (a full disk, a folder that became read-only) only costs the next load a decode: it
    is reported as a warning and False is returned.
    """
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        name = path.parent / f".tmp-{os.getpid()}-{secrets.token_hex(8)}.npz"
        # O_EXCL: never write into someone else's file; mode 0o666 less the umask, like any file.
        handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        temporary = name
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except OSError as err:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        warnings.warn(f"could not write the image cache {path}: {err}", stacklevel=2)
        return False
    _remove_stale(path)
    return True


def _remove_stale(path: Path) -> None:
    """Delete the entries that share ``path``'s options hash but not its content hash."""
    options_prefix = path.name.rsplit("-", 1)[0]
    for other in path.parent.glob(f"{options_prefix}-*.npz"):
        if other != path:
            other.unlink(missing_ok=True)
