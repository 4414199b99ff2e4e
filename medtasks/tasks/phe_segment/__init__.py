"""``phe_segment``: the task (phe_segment/task.py), its config schema and its own helpers."""

from medtasks.tasks.phe_segment.task import PheSegment

__all__ = ["PheSegment"]
