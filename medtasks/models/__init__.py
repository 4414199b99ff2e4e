"""Registered model factories; importing this package registers them."""

from medtasks.models import backbones, position_aware, sequence  # noqa: F401  (registration side effects)
