"""``phe_classify``: the task (phe_classify/task.py), its config schema and its own helpers."""

from medtasks.tasks.phe_classify.task import PheClassify

__all__ = ["PheClassify"]
