"""Registered 2-D segmentation networks (segmentation-models-pytorch wrappers).

``encoder_weights=None`` (the default) builds the encoder from scratch: nothing is downloaded.
``"imagenet"`` asks smp to download the encoder's ImageNet weights (needs network; an offline
failure is one :class:`~medtasks.models.backbones.WeightsError` saying how to proceed);
``weights=<file>`` loads a whole-network state dict saved earlier (e.g. a medtasks ``best.pt``'s
``network`` entry, or a plain ``state_dict``).

Example:
    >>> net = MODELS.get("smp_unet")(encoder="resnet18", in_channels=1, classes=1)
    >>> net(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 1, 64, 64])
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from medtasks.models.backbones import WeightsError
from medtasks.registry import MODELS

log = logging.getLogger(__name__)


def smp_encoders() -> list[str]:
    """segmentation-models-pytorch's encoder names (what a config's ``model.encoder`` is checked against)."""
    import segmentation_models_pytorch as smp

    return list(smp.encoders.get_encoder_names())


@MODELS.register("smp_unet")
def smp_unet(encoder: str = "resnet34", in_channels: int = 3, classes: int = 1, encoder_weights: str | None = None,
             weights: str | None = None, decoder_attention: str | None = None) -> nn.Module:
    """smp ``Unet`` (the PHE notes' U-Net): ``encoder`` any smp encoder name, one logit map per class."""
    import segmentation_models_pytorch as smp

    if encoder not in smp.encoders.get_encoder_names():
        from medtasks.registry import did_you_mean

        raise ValueError(f"model.encoder: unknown smp encoder {encoder!r}."
                         f"{did_you_mean(encoder, smp.encoders.get_encoder_names())}")
    try:
        net = smp.Unet(encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels, classes=classes,
                       decoder_attention_type=decoder_attention)
    except Exception as exc:
        if encoder_weights is None:
            raise
        raise WeightsError(f"could not get {encoder_weights} weights for the {encoder} encoder ({type(exc).__name__}: "
                           f"{exc}). Offline? Set model.encoder_weights=null to train from scratch, or pass "
                           f"model.weights=<a saved state dict>.") from None
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"model.weights={weights}: no such file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("network", state) if isinstance(state, dict) else state
        missing, unexpected = net.load_state_dict(state, strict=False)
        if len(missing) == len(net.state_dict()):
            raise WeightsError(f"{path}: no key matches an smp Unet({encoder}) network; "
                               "is it a state dict of this model?")
        log.info("loaded %s (%d missing, %d unexpected keys)", path, len(missing), len(unexpected))
    return net
