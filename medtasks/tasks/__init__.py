"""Task modules; importing this package registers every task."""

from medtasks.tasks import cardiac_seg, ich_classify, ms_segment, phe_classify, phe_detect, phe_multilabel, phe_segment, xray_classify  # noqa: F401  (registration side effects)
