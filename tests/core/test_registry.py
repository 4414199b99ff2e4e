from __future__ import annotations

import pytest

from medtasks.registry import Registry, UnknownNameError


def test_register_get_and_duplicate():
    reg = Registry("model")
    reg.register("resnet50")(lambda: 50)
    assert reg.get("resnet50")() == 50
    with pytest.raises(ValueError, match="already registered"):
        reg.register("resnet50")(lambda: 51)


def test_unknown_name_suggests_closest_and_lists_options():
    reg = Registry("task")
    for n in ("ich_classify", "phe_classify", "ms_segment"):
        reg.register(n)(object)
    with pytest.raises(UnknownNameError) as exc:
        reg.get("ich_clasify")
    msg = str(exc.value)
    assert "Did you mean 'ich_classify'" in msg
    assert "ms_segment" in msg and "phe_classify" in msg
