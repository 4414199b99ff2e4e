"""Base of the kinds whose manifest rows become MONAI records fed to one network (classification,
2-D segmentation): the builder hooks a task implements and the loader built from them."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import pandas as pd
import torch
from monai.transforms import Compose

from medtasks.tasks.contract import Task


class NetworkTask(Task):
    """A task trained as one network on records; see the module docstring."""

    @abstractmethod
    def records(self, df: pd.DataFrame) -> list[dict[str, Any]]:
        """One MONAI record per row of ``df`` (``image``, ``label`` where known, extra inputs), in order."""

    @abstractmethod
    def build_transforms(self, split: str) -> Compose:
        """The record -> tensor pipeline of ``split`` (``train`` augments; ``predict`` has no label)."""

    @abstractmethod
    def build_model(self) -> torch.nn.Module:
        """The network, from ``self.cfg.model`` (and the fitted ``self.state``)."""

    @abstractmethod
    def build_loss(self) -> torch.nn.Module:
        """The training loss, from ``self.cfg.loss`` (and the fitted ``self.state``)."""

    def fit_state(self, train_records: list[dict[str, Any]]) -> None:
        """Fit what the transforms or the loss need from training data into ``self.state`` (e.g. channel
        normalisation, class weights); default none."""

    def prepare_batch(self) -> Any:
        """MONAI ``prepare_batch`` for the engine (None = image/label only)."""
        return None

    def loader(self, df: pd.DataFrame, split: str, shuffle: bool, batch_size: int) -> Any:
        """A MONAI DataLoader over ``records(df)`` with the split's transforms and the configured cache."""
        return self.make_loader(self.records(df), self.build_transforms(split), shuffle, batch_size)

    def split_train_val(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The ``train`` and ``val`` rows; a clear error when either is empty."""
        train_df, val_df = df[df.split == "train"], df[df.split == "val"]
        if train_df.empty or val_df.empty:
            raise ValueError(f"need train and val rows; got {len(train_df)} train / {len(val_df)} val. "
                             f"Check data.split fractions or the manifest's split column.")
        return train_df, val_df
