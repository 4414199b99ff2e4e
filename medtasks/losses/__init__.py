"""Registered losses; importing this package registers them."""

from medtasks.losses import classification  # noqa: F401  (registration side effects)
