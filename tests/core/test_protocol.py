"""Protocol profiles: ``<task>.report.yaml`` laid over a config, validated, shown by ``medtasks config``."""

from __future__ import annotations

import pytest
import yaml

from medtasks import api
from medtasks.cli import main
from medtasks.config import ConfigError, load_config
from medtasks.schema import ProtocolConfig


def test_overlay_keys_win_and_its_base_is_ignored(tmp_path) -> None:
    cls = api.get_task_class("phe_classify").Config
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"base": "does-not-exist.yaml", "data": {"split_level": "slice"},
                                       "protocol": {"name": "report", "departures": ["leaky"]}}))
    demo = api.default_config("phe_classify", demo=True)
    cfg = load_config(demo, cls, ["train.epochs=2"], overlays=[overlay])
    plain = load_config(demo, cls)
    assert cfg.data.split_level == "slice" and cfg.train.epochs == 2
    assert cfg.data.split == plain.data.split and cfg.input.size == plain.input.size   # the demo's size kept
    assert cfg.protocol.warnings() == ["report protocol: leaky"]


def test_report_protocol_needs_its_departures() -> None:
    with pytest.raises(ConfigError, match="departures"):
        ProtocolConfig(name="report").validate()
    assert ProtocolConfig().warnings() == []


def test_unknown_protocol_profile_names_the_ones_there(monkeypatch, tmp_path) -> None:
    (tmp_path / "t.yaml").write_text("task: t\n")
    (tmp_path / "t.demo.yaml").write_text("task: t\n")
    monkeypatch.setenv("MEDTASKS_CONFIG_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no 'report' protocol profile .*none"):
        api.protocol_overlay("t", "report")
    assert api.protocol_overlay("t", None) == [] and api.protocol_overlay("t", "medtasks") == []


def test_cli_config_shows_and_resolves_the_report_protocol(capsys, tmp_path) -> None:
    assert main(["config", "phe_segment", "--demo", "--protocol", "report"]) == 0
    lines = capsys.readouterr().out.split()
    assert lines[0].endswith("phe_segment.demo.yaml") and lines[1].endswith("phe_segment.report.yaml")
    out = tmp_path / "resolved.yaml"
    assert main(["config", "phe_segment", "--demo", "--protocol", "report", "--out", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    assert data["protocol"]["name"] == "report" and data["eval"]["split"] == "val" and "base" not in data
