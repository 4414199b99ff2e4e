"""The run directory (design §1): one self-contained folder per run.

```
runs/<task>/<timestamp>-<config-stem>/
  status.json  config.resolved.yaml  env.json  run.log  manifest.csv  rejected.csv  checkpoints/  history.csv
  predictions.csv  metrics.json  report.html  figures/
```

``status.json`` says where the run stands: ``running`` from the moment the folder exists, ``failed`` (with the
error; its traceback is in ``run.log``) or ``finished``. It is written atomically, so a reader sees one whole
state. ``report`` and ``compare`` name a failed run as such instead of tripping over its missing files. Run
directories made before the status existed have no ``status.json``: :meth:`RunDir.read_status` returns None and
readers go by the files present, as before.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import logging.handlers
import platform
import subprocess
import sys
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import yaml

from medtasks.config import dump_yaml
from medtasks.io.atomic import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

RUNNING, FAILED, FINISHED = "running", "failed", "finished"
STATUSES = (RUNNING, FAILED, FINISHED)
STATUS_FILE = "status.json"


class FailedRunError(ValueError):
    """A run directory whose run failed (or never finished) was asked for what only a finished run has; the
    message names the directory, the error and ``run.log``."""


def read_status(path: str | Path) -> dict[str, Any] | None:
    """``<path>/status.json`` as a dict (``status``, ``started``, ``updated``, ``error`` when failed); None for a
    run directory made before statuses were recorded (or a folder that is not a run)."""
    f = Path(path) / STATUS_FILE
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"status": "unknown", "error": f"{f} is unreadable ({exc})"}
    return data if isinstance(data, dict) else {"status": "unknown", "error": f"{f} is not a JSON object"}


def unfinished_run_message(path: str | Path, status: Mapping[str, Any]) -> str:
    """What a reader says of a run directory whose ``status`` is not ``finished``: ``<dir> is a failed run
    (<error>): see <dir>/run.log``, or that it has not finished (still running, or killed)."""
    path = Path(path)
    state = status.get("status")
    if state == FAILED:
        return f"{path} is a failed run ({status.get('error') or 'no error recorded'}): see {path / 'run.log'}"
    since = f" since {status['started']}" if status.get("started") else ""
    if state == RUNNING:
        return (f"{path} has not finished (status running{since}: still running, or it was killed): "
                f"see {path / 'run.log'}")
    return f"{path} has no usable status ({status.get('error') or status.get('status')!r}): see {path / 'run.log'}"


PACKAGES = ("medtasks", "torch", "torchvision", "monai", "pytorch-ignite", "pydicom", "pylibjpeg", "pylibjpeg-openjpeg",
            "numpy", "pandas", "scikit-learn", "iterative-stratification", "matplotlib")


def git_sha() -> str | None:
    """Commit of the medtasks checkout, when it is one."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(seed: int, device: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    import torch

    from medtasks.engine.runtime import cpu_has_bf16

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "git_sha": git_sha(), "seed": seed, "device": device, "command": " ".join(sys.argv),
            "torch_threads": torch.get_num_threads(), "cpu_native_bf16": cpu_has_bf16(),  # what timings depend on
            "started": _dt.datetime.now().isoformat(timespec="seconds"), **(extra or {})}


@dataclass
class RunDir:
    """Paths of one run directory."""

    path: Path

    @classmethod
    def create(cls, runs_root: str | Path, task: str, config_stem: str) -> "RunDir":
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(runs_root) / task / f"{stamp}-{config_stem}"
        path, i = base, 1
        while path.exists():  # two runs in the same second
            path, i = base.with_name(f"{base.name}-{i}"), i + 1
        (path / "checkpoints").mkdir(parents=True)
        (path / "figures").mkdir()
        rd = cls(path)
        rd.set_status(RUNNING)
        return rd

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        if not (path / "config.resolved.yaml").is_file():
            raise FileNotFoundError(f"{path} is not a medtasks run directory (no config.resolved.yaml)")
        return cls(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    def write_config(self, resolved: Mapping[str, Any]) -> None:
        write_text_atomic(self.path / "config.resolved.yaml", dump_yaml(resolved))

    def read_config(self) -> dict[str, Any]:
        with open(self.path / "config.resolved.yaml", encoding="utf-8") as fh:
            return yaml.safe_load(fh)

    def write_env(self, seed: int, device: str, extra: Mapping[str, Any] | None = None) -> None:
        write_json_atomic(self.path / "env.json", environment(seed, device, extra))

    def read_env(self) -> dict[str, Any]:
        path = self.path / "env.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    # ---- status ---------------------------------------------------------------------------------
    def read_status(self) -> dict[str, Any] | None:
        """See :func:`read_status`."""
        return read_status(self.path)

    @property
    def status(self) -> str | None:
        """``running`` / ``failed`` / ``finished``; None for a run directory without ``status.json``."""
        data = self.read_status()
        return None if data is None else data.get("status")

    def set_status(self, status: str, error: str | None = None) -> None:
        """Write ``status.json`` atomically: ``status`` (one of :data:`STATUSES`), when the run started (kept
        from the previous status, e.g. a resumed run's first start) and ``error`` for a failed run."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r}: one of {', '.join(STATUSES)}")
        now = _dt.datetime.now().isoformat(timespec="seconds")
        previous = self.read_status() or {}
        data: dict[str, Any] = {"status": status, "started": previous.get("started", now), "updated": now}
        if previous.get("status") and status == RUNNING:
            data["resumed"] = now              # a resumed run: running again
        if error is not None:
            data["error"] = error
        write_json_atomic(self.path / STATUS_FILE, data)

    def mark_failed(self, exc: BaseException) -> None:
        """Record a failure: the traceback appended to ``run.log``, ``status.json`` -> ``failed`` with the error's
        one line (``KeyboardInterrupt`` included: an interrupted run can be resumed with ``--resume``)."""
        line = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        try:   # a full disk must not hide the run's own error: the caller re-raises that one
            append_run_log(self, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            self.set_status(FAILED, error=line.splitlines()[0])
        except OSError as err:
            log.warning("could not record the failure in %s: %s", self.path, err)

    def check_finished(self) -> None:
        """:class:`FailedRunError` naming the directory when its status is failed or running; a finished run or
        one made before statuses were recorded (no ``status.json``) passes."""
        data = self.read_status()
        if data is not None and data.get("status") != FINISHED:
            raise FailedRunError(unfinished_run_message(self.path, data))


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunLog:
    """``run.log``: the log lines a run prints (INFO and up, the ``medtasks`` loggers' and any other that
    reaches the root logger), from the start of the run, in the run directory.

    Lines logged before the run directory exists (synthesis, prepare) are held in memory and written
    when :meth:`open` names the file; progress bars go to the terminal only (no redraws in the file).
    A resumed run appends. Use as a context manager around the whole run.
    """

    def __init__(self) -> None:
        self._held = logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)
        self._held.setLevel(logging.INFO)
        self._file: logging.FileHandler | None = None
        self._medtasks = logging.getLogger("medtasks")
        self._level = self._medtasks.level

    def __enter__(self) -> RunLog:
        if self._medtasks.getEffectiveLevel() > logging.INFO:  # the API without logging set up: keep INFO
            self._medtasks.setLevel(logging.INFO)
        logging.getLogger().addHandler(self._held)
        return self

    def open(self, path: str | Path) -> None:
        """Start writing to ``path`` (appending), with everything held so far."""
        self._file = logging.FileHandler(path, mode="a", encoding="utf-8")
        self._file.setLevel(logging.INFO)
        self._file.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        self._held.setTarget(self._file)
        self._held.flush()
        root = logging.getLogger()
        root.removeHandler(self._held)
        root.addHandler(self._file)

    def __exit__(self, *exc: Any) -> None:
        root = logging.getLogger()
        for h in (self._held, self._file):
            if h is not None:
                root.removeHandler(h)
                h.close()
        self._medtasks.setLevel(self._level)


def append_run_log(run: RunDir, text: str) -> None:
    """Append ``text`` (e.g. the summary the CLI prints at the end) to ``run.log``."""
    with open(run / "run.log", "a", encoding="utf-8") as fh:
        fh.write(text.rstrip("\n") + "\n")
