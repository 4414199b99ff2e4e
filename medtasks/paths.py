"""Where medtasks finds its configs and writes its caches (environment variables first).

Example:
    >>> config_dir().name
    'configs'
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    """The folder of ``<task>.yaml`` / ``<task>.demo.yaml`` (``$MEDTASKS_CONFIG_DIR`` overrides)."""
    return Path(os.environ.get("MEDTASKS_CONFIG_DIR", REPO_ROOT / "configs"))


def cache_dir() -> Path:
    """Where synthetic defaults and converted inputs are cached (``$MEDTASKS_CACHE``, default ``./.cache/medtasks``)."""
    return Path(os.environ.get("MEDTASKS_CACHE", Path.cwd() / ".cache" / "medtasks"))
