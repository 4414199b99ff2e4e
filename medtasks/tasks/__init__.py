"""Tasks: the contract (:mod:`~medtasks.tasks.contract`), kind bases (:mod:`~medtasks.tasks.kinds`), dataset
sources (:mod:`~medtasks.tasks.sources`) and one package per task. Importing this package registers every task.
"""

from medtasks.tasks import (  # noqa: F401  (registration side effects)
    cardiac_seg,
    ich_classify,
    ms_segment,
    phe_classify,
    phe_detect,
    phe_multilabel,
    phe_segment,
    xray_classify,
)
