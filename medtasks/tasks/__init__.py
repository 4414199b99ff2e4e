"""Task modules; importing this package registers every task."""

from medtasks.tasks import ich_classify, phe_classify  # noqa: F401  (registration side effects)
