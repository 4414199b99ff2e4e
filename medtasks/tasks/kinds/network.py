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

    # ---- export (medtasks export) -------------------------------------------------------------
    def export_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        """Rows of the run's evaluation split that the network sees one by one (default: those rows)."""
        return self.eval_rows(df)

    def export_contract(self, run: Any) -> dict[str, Any]:
        """What a user of the exported file must do before and after it (the sidecar's body); a kind adds what
        its output means."""
        from medtasks.config import to_dict

        steps = [type(t).__name__ for t in self.build_transforms("predict").transforms]
        return {"preprocessing": {"medtasks_transforms": steps, "input": to_dict(self.cfg.input),
                                  "fitted": {k: v for k, v in self.state.items()
                                             if k not in ("temperature", "thresholds")}}}

    def export_networks(self, run: Any, df: pd.DataFrame, n_inputs: int) -> list[Any]:
        """The best checkpoint's network with a batch of the evaluation split's rows, preprocessed as
        ``evaluate`` does, as its example inputs."""
        from medtasks.engine.export import ExportedNetwork, batch_inputs

        rows = self.export_rows(df).head(n_inputs).reset_index(drop=True)
        loader = self.loader(rows, self.cfg.eval.split, False, max(1, len(rows)))
        prepare = self.prepare_batch()
        inputs = batch_inputs(next(iter(loader)), prepare)
        extra = getattr(prepare, "extra_keys", ()) or ()
        extra = (extra,) if isinstance(extra, str) else tuple(extra)
        model = self.load_model(run, "best").cpu().eval()
        return [ExportedNetwork("model", model, inputs, ("image", *extra), contract=self.export_contract(run))]

    def bundle_inputs(self, run: Any) -> dict[str, Any]:
        """The MONAI bundle's inputs and preprocessing, as ``medtasks predict`` reads and prepares them (fields of
        :class:`medtasks.engine.bundle_spec.BundleSpec`: ``datalist``, ``preprocessing``, ``data_type``, ``modality``,
        ``inputs_doc``, ... ); a task with a bundle implements it (default: no bundle, with the reason)."""
        raise ValueError(self.bundle_refusal())

    def split_train_val(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The ``train`` and ``val`` rows; a clear error when either is empty."""
        train_df, val_df = df[df.split == "train"], df[df.split == "val"]
        if train_df.empty or val_df.empty:
            raise ValueError(f"need train and val rows; got {len(train_df)} train / {len(val_df)} val. "
                             f"Check data.split fractions or the manifest's split column.")
        return train_df, val_df
