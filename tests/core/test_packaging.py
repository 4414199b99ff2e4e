"""medtasks works as an installed package: configs inside it (importlib.resources), `python -m medtasks`,
`medtasks config`, and a wheel that carries every config (`.ci/run` also installs that wheel in a fresh
virtual environment and runs it from outside the checkout)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import medtasks
from medtasks import api
from medtasks.config import load_config
from medtasks.paths import config_dir, package_config_dir
from medtasks.registry import TASKS

REPO = Path(__file__).resolve().parents[2]


def test_configs_are_found_inside_the_package_from_any_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEDTASKS_CONFIG_DIR", raising=False)
    assert config_dir() == package_config_dir() == Path(medtasks.__file__).parent / "configs"
    api.list_tasks()
    for name in TASKS.names():
        for demo in (False, True):
            path = api.default_config(name, demo=demo)
            assert path.parent == package_config_dir() and load_config(path, TASKS.get(name).Config).task == name


def test_config_dir_override_and_clear_error(tmp_path, monkeypatch) -> None:
    (tmp_path / "phe_classify.demo.yaml").write_text("task: phe_classify\nseed: 7\n")
    monkeypatch.setenv("MEDTASKS_CONFIG_DIR", str(tmp_path))
    assert api.default_config("phe_classify", demo=True) == tmp_path / "phe_classify.demo.yaml"
    with pytest.raises(FileNotFoundError, match="phe_classify.yaml not found; pass --config or set MEDTASKS_CONF"):
        api.default_config("phe_classify", demo=False)


def test_python_dash_m_from_another_folder(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "medtasks", "list"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    api.list_tasks()
    assert all(name in out.stdout for name in TASKS.names())


def test_config_command_writes_a_standalone_resolved_copy(tmp_path) -> None:
    from medtasks.cli import main

    out = tmp_path / "mine.yaml"
    assert main(["config", "xray_classify", "--demo", "--out", str(out)]) == 0
    text = out.read_text()
    assert "base:" not in text and text.startswith("task: xray_classify")
    cls = TASKS.get("xray_classify")
    assert load_config(out, cls.Config) == load_config(api.default_config("xray_classify", True), cls.Config)


@pytest.mark.slow
def test_the_wheel_carries_every_config(tmp_path) -> None:
    """Built as `.ci/run` builds it (pip wheel of the checkout; the venv's setuptools, no download)."""
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel, = tmp_path.glob("medtasks-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    api.list_tasks()
    for name in TASKS.names():
        assert {f"medtasks/configs/{name}.yaml", f"medtasks/configs/{name}.demo.yaml"} <= names
    assert "medtasks/__main__.py" in names and not any(n.startswith(("tests/", "configs/")) for n in names)
