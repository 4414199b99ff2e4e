"""Transfer-learning modes: which parameters of a classifier train, and frozen layers kept in eval mode.

* ``linear_probe`` — only the task head (``head.*``) trains; the backbone is a fixed feature extractor.
* ``partial`` — the modules named in ``freeze`` are frozen, everything else trains. A name is a
  module path (``backbone.layer1``) or a range of an ``nn.Sequential``'s children,
  ``backbone.features.1-30`` (inclusive): the chest X-ray report's VGG16 run froze ``features``
  layers 2 to 30 and let the first conv learn.
* ``finetune`` — every parameter trains.

Frozen modules stay in eval mode during training (their BatchNorm running statistics are not
updated by the new data), which is what "frozen" means to a user; :class:`TransferModel`
enforces it on every ``.train()`` call.

Example:
    >>> net = TransferModel(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), ["0"])
    >>> [p.requires_grad for p in net.parameters()]
    [False, False, True, True]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MODES", "TransferModel", "resolve_frozen", "apply_transfer"]

MODES = ("linear_probe", "partial", "finetune")
_RANGE = re.compile(r"^(?P<prefix>.+)\.(?P<lo>\d+)-(?P<hi>\d+)$")


def resolve_frozen(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Module paths that ``names`` denote (ranges expanded); an unknown name raises with the valid ones."""
    modules = dict(model.named_modules())
    out: list[str] = []
    for name in names:
        m = _RANGE.match(name)
        if m and m["prefix"] in modules and isinstance(modules[m["prefix"]], nn.Sequential):
            lo, hi = int(m["lo"]), int(m["hi"])
            n = len(modules[m["prefix"]])
            if not 0 <= lo <= hi < n:
                raise ValueError(f"model.freeze: {name!r} is outside {m['prefix']}'s children 0-{n - 1}")
            out += [f"{m['prefix']}.{i}" for i in range(lo, hi + 1)]
        elif name in modules:
            out.append(name)
        else:
            tops = sorted({k.rsplit(".", 1)[0] for k in modules if k.count(".") <= 2 and k})
            raise ValueError(f"model.freeze: no module {name!r} in {type(model).__name__}; e.g. {', '.join(tops[:12])} "
                             f"(a range of a Sequential's children: 'backbone.features.1-30')")
    return out


class TransferModel(nn.Module):
    """``model`` with the modules at ``frozen`` paths frozen (no gradient, eval mode in training)."""

    def __init__(self, model: nn.Module, frozen: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.frozen = list(frozen)
        modules = dict(model.named_modules())
        for name in self.frozen:
            for p in modules[name].parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        modules = dict(self.model.named_modules())
        for name in self.frozen:
            modules[name].eval()
        return self

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.model(*args, **kwargs)


def apply_transfer(model: nn.Module, mode: str, freeze: Sequence[str] = ()) -> nn.Module:
    """Wrap ``model`` (a classifier with ``backbone`` and ``head``) for ``mode``; ``finetune`` returns it as is.

    The wrapper's state dict has the same keys as the model's, prefixed ``model.``; checkpoints are
    saved and loaded through the same wrapper, so nothing else changes.
    """
    if mode not in MODES:
        raise ValueError(f"model.transfer={mode!r}: use one of {', '.join(MODES)}")
    if mode == "finetune":
        if freeze:
            raise ValueError("model.freeze is only used with model.transfer=partial")
        return model
    if mode == "linear_probe":
        if not hasattr(model, "backbone"):
            raise ValueError(f"linear_probe needs a model with a 'backbone' module; {type(model).__name__} has none")
        return TransferModel(model, ["backbone"])
    if not freeze:
        raise ValueError("model.transfer=partial needs model.freeze, e.g. ['backbone.features.1-30'] (VGG16) or "
                         "['backbone.conv1', 'backbone.bn1', 'backbone.layer1'] (ResNet)")
    return TransferModel(model, resolve_frozen(model, freeze))


def trainable_fraction(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
