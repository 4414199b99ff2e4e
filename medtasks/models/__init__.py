"""Registered model factories; importing this package registers them."""

from medtasks.models import backbones, classifier, ms_unet, position_aware, segmentation, sequence, volumetric  # noqa: F401  (registration side effects)
