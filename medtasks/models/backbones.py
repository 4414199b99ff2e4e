"""Registered image backbones: a torchvision network without its classifier, plus its feature size.

``pretrained: imagenet`` uses torchvision's own download (cached by torch hub); offline, the
failure becomes one error that says what to do. ``weights: <file>`` loads a local state dict
(torchvision layout, classifier keys ignored) with ``weights_only=True``. Inputs with a channel
count other than 3 (2.5D stacks) get a new first convolution; with pretrained weights its kernel
is the RGB kernel averaged and repeated, scaled so the activation magnitude is unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from medtasks.registry import BACKBONES

log = logging.getLogger(__name__)


class WeightsError(RuntimeError):
    """Pretrained/local weights could not be loaded; the message says how to proceed."""


def _torchvision(name: str, builder: Callable, weights_enum: str, pretrained: str | None, **scratch: Any) -> nn.Module:
    """torchvision model; ``scratch`` are builder options used only without pretrained weights."""
    import torchvision.models as tvm

    if pretrained is None:
        return builder(weights=None, **scratch)
    if pretrained != "imagenet":
        raise WeightsError(f"model.pretrained={pretrained!r}: the only download source is 'imagenet' (or null)")
    weights = getattr(tvm, weights_enum).IMAGENET1K_V1
    try:
        return builder(weights=weights)
    except Exception as exc:  # URLError, SSL, hash mismatch ... all mean the same to the user
        raise WeightsError(
            f"could not download ImageNet weights for {name} ({type(exc).__name__}: {exc}). This machine may be "
            f"offline. Either set model.pretrained=null to train from scratch, or download {weights.url} "
            f"elsewhere and pass model.weights=<path to the .pth file>.") from None


def _replace_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (3.0 / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def load_local_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``model`` (before its head is removed); classifier keys may differ."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model.weights={str(path)!r} does not exist; give the path of a .pth/.pt state dict")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise WeightsError(f"{path}: no tensor matches the backbone's layer names/shapes; is it a torchvision "
                           f"state dict for this backbone?")
    missing = [k for k in own if k not in usable]
    model.load_state_dict(usable, strict=False)
    log.info("loaded %d tensors from %s (%d left at init: %s)", len(usable), path, len(missing), missing[:4])


def _headless_resnet(net: nn.Module, in_channels: int, weights: str | None) -> tuple[nn.Module, int]:
    """A torchvision ResNet with local ``weights`` loaded, its first convolution for ``in_channels`` and no
    classifier; returns it and its feature size."""
    if weights:
        load_local_weights(net, weights)
    if in_channels != 3:
        net.conv1 = _replace_first_conv(net.conv1, in_channels)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def _resnet(depth: int) -> Callable[..., tuple[nn.Module, int]]:
    def build(in_channels: int = 3, pretrained: str | None = None, weights: str | None = None) -> tuple[nn.Module, int]:
        import torchvision.models as tvm

        # From scratch, each residual block's last BatchNorm starts at zero (Goyal et al. 2017): every block
        # begins as the identity, which lets a ResNet learn from a few thousand slices in a few epochs.
        net = _torchvision(f"resnet{depth}", getattr(tvm, f"resnet{depth}"), f"ResNet{depth}_Weights", pretrained,
                           zero_init_residual=True)
        return _headless_resnet(net, in_channels, weights)

    return build


def _resnet10(in_channels: int = 3, pretrained: str | None = None, weights: str | None = None
              ) -> tuple[nn.Module, int]:
    """ResNet-10: torchvision's ``ResNet`` with one ``BasicBlock`` per stage (ResNet-18 has two), about half
    its compute; from scratch only (no ImageNet weights exist), for the CPU demo profiles."""
    from torchvision.models.resnet import BasicBlock, ResNet

    if pretrained is not None:
        raise WeightsError("resnet10 has no ImageNet weights; set model.pretrained=null or use resnet18/resnet50")
    return _headless_resnet(ResNet(BasicBlock, [1, 1, 1, 1], zero_init_residual=True), in_channels, weights)


def _efficientnet_b4(in_channels: int = 3, pretrained: str | None = None,
                    weights: str | None = None) -> tuple[nn.Module, int]:
    import torchvision.models as tvm

    net = _torchvision("efficientnet_b4", tvm.efficientnet_b4, "EfficientNet_B4_Weights", pretrained)
    if weights:
        load_local_weights(net, weights)
    if in_channels != 3:
        net.features[0][0] = _replace_first_conv(net.features[0][0], in_channels)
    dim = net.classifier[-1].in_features
    net.classifier = nn.Identity()
    return net, dim


def _vgg16(in_channels: int = 3, pretrained: str | None = None, weights: str | None = None) -> tuple[nn.Module, int]:
    """torchvision VGG16: ``features`` (31 modules: 13 conv + ReLU + 5 max-pools), adaptive 7x7 average pool,
    and the classifier up to its second 4096-unit ReLU + dropout; the last ``Linear(4096, 1000)`` becomes
    the task head. The VGG16 of the chest X-ray report (``features[1:31]`` frozen in its partial run)."""
    import torchvision.models as tvm

    net = _torchvision("vgg16", tvm.vgg16, "VGG16_Weights", pretrained)
    if weights:
        load_local_weights(net, weights)
    if in_channels != 3:
        net.features[0] = _replace_first_conv(net.features[0], in_channels)
    dim = net.classifier[-1].in_features
    net.classifier[-1] = nn.Identity()
    return net, dim


BACKBONES.register("resnet10")(_resnet10)
BACKBONES.register("resnet18")(_resnet(18))
BACKBONES.register("resnet50")(_resnet(50))
BACKBONES.register("efficientnet_b4")(_efficientnet_b4)
BACKBONES.register("vgg16")(_vgg16)
