"""Registered model factories; importing this package registers them."""

from medtasks.models import backbones, position_aware  # noqa: F401  (registration side effects)
