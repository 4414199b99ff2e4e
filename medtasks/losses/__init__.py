"""Registered losses; importing this package registers them."""

from medtasks.losses import classification, segmentation  # noqa: F401  (registration side effects)
