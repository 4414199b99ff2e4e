"""``cardiac_seg``: the task (cardiac_seg/task.py), its config schema and its own helpers."""

from medtasks.tasks.cardiac_seg.task import CardiacSeg

__all__ = ["CardiacSeg"]
