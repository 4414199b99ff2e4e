"""``phe_multilabel``: the task (phe_multilabel/task.py), its config schema and its own helpers."""

from medtasks.tasks.phe_multilabel.task import PheMultilabel

__all__ = ["PheMultilabel"]
