"""``xray_classify``: the task (xray_classify/task.py), its config schema and its own helpers."""

from medtasks.tasks.xray_classify.task import XrayClassify

__all__ = ["XrayClassify"]
