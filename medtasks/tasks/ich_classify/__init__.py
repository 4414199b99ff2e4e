"""``ich_classify``: the task (ich_classify/task.py), its config schema and its own helpers."""

from medtasks.tasks.ich_classify.task import IchClassify

__all__ = ["IchClassify"]
