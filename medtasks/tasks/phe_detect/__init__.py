"""``phe_detect``: the task (phe_detect/task.py), its config schema and its own helpers."""

from medtasks.tasks.phe_detect.task import PheDetect

__all__ = ["PheDetect"]
