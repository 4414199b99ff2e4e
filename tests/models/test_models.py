from __future__ import annotations

import pytest
import torch

from medtasks.losses.classification import WeightedBCEWithLogits
from medtasks.models.backbones import WeightsError
from medtasks.models.position_aware import PositionAwareClassifier


@pytest.mark.parametrize("backbone", ["resnet10", "resnet18", "resnet50", "efficientnet_b4"])
@pytest.mark.parametrize("use_position", [True, False])
def test_output_shape(backbone, use_position):
    net = PositionAwareClassifier(backbone, n_outputs=6, use_position=use_position).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64), torch.tensor([0.0, 1.0]))
    assert out.shape == (2, 6)
    assert (net.position is not None) == use_position
    assert (net.head[0].in_features
            == {"resnet10": 512, "resnet18": 512, "resnet50": 2048, "efficientnet_b4": 1792}[backbone]
            + 64 * use_position)


def test_position_changes_output_only_with_position():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    net = PositionAwareClassifier("resnet18", use_position=True).eval()
    with torch.no_grad():
        assert not torch.allclose(net(x, torch.tensor([0.0])), net(x, torch.tensor([1.0])))
    net = PositionAwareClassifier("resnet18", use_position=False).eval()
    with torch.no_grad():
        assert torch.allclose(net(x, torch.tensor([0.0])), net(x, torch.tensor([1.0])))
    with pytest.raises(ValueError, match="pass z"):
        PositionAwareClassifier("resnet18")(x)


def test_nine_channel_input_and_local_weights(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    net = PositionAwareClassifier("resnet18", in_channels=9, weights=str(tmp_path / "r18.pth"))
    assert net.backbone.conv1.in_channels == 9
    assert torch.allclose(net.backbone.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    with pytest.raises(WeightsError, match="does not exist"):
        PositionAwareClassifier("resnet18", weights=str(tmp_path / "missing.pth"))


def test_offline_imagenet_is_one_clear_error(monkeypatch):
    import torchvision.models as tvm

    def boom(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvm, "resnet18", boom)
    with pytest.raises(WeightsError, match="model.pretrained=null"):
        PositionAwareClassifier("resnet18", pretrained="imagenet")


def test_weighted_bce_matches_rsna_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0, -3.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0, 1.0]])
    w = torch.tensor([1, 1, 1, 1, 1, 2.0])
    p = torch.sigmoid(logits)
    per = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
    expected = (per * w).sum() / w.sum()
    assert torch.allclose(WeightedBCEWithLogits([1, 1, 1, 1, 1, 2])(logits, target), expected)


def test_resnet_from_scratch_starts_residual_blocks_at_identity() -> None:
    from medtasks.models.backbones import _resnet

    net, dim = _resnet(18)(in_channels=3)
    assert dim == 512
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in layer:
            assert torch.count_nonzero(block.bn2.weight) == 0
    assert torch.count_nonzero(net.bn1.weight) > 0


def test_resnet10_is_one_block_per_stage_and_from_scratch_only():
    from medtasks.registry import BACKBONES

    net, dim = BACKBONES.get("resnet10")(in_channels=9)
    assert dim == 512 and net.conv1.in_channels == 9
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    r18, _ = BACKBONES.get("resnet18")()
    assert sum(p.numel() for p in net.parameters()) < 0.75 * sum(p.numel() for p in r18.parameters())
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        BACKBONES.get("resnet10")(pretrained="imagenet")


def test_basic_unet_3d_widths_and_shape():
    from medtasks.registry import MODELS

    net = MODELS.get("basic_unet_3d")(in_channels=1, out_channels=3, feature_size=8).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 32, 48, 32)).shape == (1, 3, 32, 48, 32)
    assert net.conv_0.conv_0.conv.out_channels == 8 and net.down_4.convs.conv_0.conv.out_channels == 64


def test_swinunetr_fused_attention_at_inference_matches_the_plain_path():
    """The registered SwinUNETR takes MONAI's scaled-dot-product attention where MONAI has it (1.6.1+): same
    state dict, logits within float tolerance of the plain attention, and training (grad on) is untouched."""
    import inspect

    from monai.networks.nets import SwinUNETR

    from medtasks.registry import MODELS

    if "use_flash_attention" not in inspect.signature(SwinUNETR).parameters:
        pytest.skip("this MONAI has no use_flash_attention (1.6.1+)")
    torch.manual_seed(0)
    fused = MODELS.get("swinunetr")(in_channels=1, out_channels=2, feature_size=12).eval()
    assert all(m.use_flash_attention for m in fused.modules() if hasattr(m, "use_flash_attention"))
    plain = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, spatial_dims=3).eval()
    plain.load_state_dict(fused.state_dict())
    x = torch.rand(1, 1, 64, 32, 32)
    with torch.inference_mode():
        diff = (fused(x) - plain(x)).abs().max().item()
    assert diff < 1e-4                           # another kernel, within float tolerance
    with torch.enable_grad():
        assert torch.equal(fused(x), plain(x))   # grad on: the plain path in both
