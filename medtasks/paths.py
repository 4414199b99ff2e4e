"""Where medtasks finds its configs and writes its caches (environment variables first).

The configs ship inside the package (``medtasks/configs/``, package data of the wheel) and are found
with :mod:`importlib.resources`, so an installed medtasks works from any folder; ``$MEDTASKS_CONFIG_DIR``
(or ``--config``) points at a folder of one's own.

Example:
    >>> config_dir().name
    'configs'
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def package_config_dir() -> Path:
    """The configs shipped with the package (``medtasks/configs``)."""
    path = Path(str(resources.files("medtasks") / "configs"))
    if not path.is_dir():  # e.g. a zipped install: the YAML files' ``base:`` needs real files
        raise FileNotFoundError(f"{path}: the packaged configs are not a folder on disk; reinstall medtasks "
                                f"unzipped (pip install) or set MEDTASKS_CONFIG_DIR to a folder of configs")
    return path


def config_dir() -> Path:
    """The folder of ``<task>.yaml`` / ``<task>.demo.yaml``: ``$MEDTASKS_CONFIG_DIR``, else the packaged one."""
    env = os.environ.get("MEDTASKS_CONFIG_DIR")
    return Path(env) if env else package_config_dir()


def cache_dir() -> Path:
    """Where synthetic defaults and converted inputs are cached (``$MEDTASKS_CACHE``, default ``./.cache/medtasks``)."""
    return Path(os.environ.get("MEDTASKS_CACHE", Path.cwd() / ".cache" / "medtasks"))
