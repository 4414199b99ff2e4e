"""``ms_segment``: the task (ms_segment/task.py), its config schema and its own helpers."""

from medtasks.tasks.ms_segment.task import MsSegment

__all__ = ["MsSegment"]
