from __future__ import annotations

from pathlib import Path

import pytest

from medtasks.config import ConfigError, apply_overrides, load_config
from medtasks.tasks.ich_classify.config import IchConfig

CONFIGS = Path(__file__).resolve().parents[2] / "medtasks" / "configs"


def test_paper_config_loads_with_report_numbers():
    cfg = load_config(CONFIGS / "ich_classify.yaml", IchConfig)
    assert cfg.model.backbone == "resnet50" and cfg.model.position_dim == 64 and cfg.model.fusion_dim == 256
    assert cfg.model.dropout == pytest.approx(0.3)
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.weight_decay == pytest.approx(5e-4)
    assert cfg.train.epochs == 60 and cfg.train.early_stopping_patience == 10
    assert cfg.loss.class_weights == [1, 1, 1, 1, 1, 2]
    assert cfg.input.windows == [(40, 80), (50, 130), (600, 2800)]


def test_demo_inherits_base_and_overrides_apply():
    cfg = load_config(CONFIGS / "ich_classify.demo.yaml", IchConfig, ["train.epochs=3", "model.use_position=false"])
    assert cfg.model.backbone == "resnet10"          # from demo (the paper: resnet50)
    assert cfg.loss.class_weights[-1] == 2            # inherited from base
    assert cfg.train.epochs == 3 and cfg.model.use_position is False


def test_unknown_key_names_path_and_suggests():
    with pytest.raises(ConfigError) as exc:
        load_config(CONFIGS / "ich_classify.yaml", IchConfig, ["optim.learning_rate=0.1"])
    assert str(exc.value).startswith("optim.learning_rate: unknown key")
    with pytest.raises(ConfigError, match=r"train\.epocs: unknown key\. Did you mean 'epochs'"):
        load_config(None, IchConfig, ["train.epocs=3"])


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match=r"^train\.epochs: expected an integer"):
        load_config(None, IchConfig, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"^model\.backbone: unknown backbone 'resnet5'.*resnet50"):
        load_config(None, IchConfig, ["model.backbone=resnet5"])
    with pytest.raises(ConfigError, match=r"^optim\.name: invalid value 'adamx'.*adamw"):
        load_config(None, IchConfig, ["optim.name=adamx"])
    with pytest.raises(ConfigError, match=r"^loss\.class_weights: expected 6 values"):
        load_config(None, IchConfig, ["loss.class_weights=[1,2]"])
    with pytest.raises(ConfigError, match=r"^data\.split: expected values summing to 1, got \[0\.5, 0\.5, 0\.5\] "
                                          r"\(sum 1\.5\)"):
        load_config(None, IchConfig, ["data.split=[0.5,0.5,0.5]"])


def test_base_chain_and_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("task: ich_classify\ntrain: {epochs: 5, batch_size: 4}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain: {epochs: 7}\n")
    cfg = load_config(tmp_path / "b.yaml", IchConfig)
    assert (cfg.train.epochs, cfg.train.batch_size) == (7, 4)
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "c.yaml", IchConfig)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_overrides({}, ["train.epochs"])
