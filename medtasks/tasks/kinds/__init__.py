"""Kind bases: ``train`` / ``evaluate`` / ``predict_frame`` once for every task of a kind.

- :mod:`~medtasks.tasks.kinds.network` — rows -> MONAI records -> one network (the builder hooks);
- :mod:`~medtasks.tasks.kinds.classification` — binary and multi-label classification, calibration,
  with :mod:`~medtasks.tasks.kinds.cross_validation`;
- :mod:`~medtasks.tasks.kinds.grey_classifier` — 2-D grey images (+ :mod:`~medtasks.tasks.kinds.grey_config`);
- :mod:`~medtasks.tasks.kinds.segmentation` — binary 2-D segmentation
  (+ :mod:`~medtasks.tasks.kinds.segmentation_config`);
- :mod:`~medtasks.tasks.kinds.detection` — ultralytics YOLO as the engine.
"""
