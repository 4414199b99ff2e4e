"""EpochScores (ignite's EpochMetric with a dict-returning score): shapes kept, flat metrics, reset per epoch, and
under torchrun (2 Gloo processes) unequal validation shards gathered back into the split's order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from medtasks.engine import distributed
from medtasks.engine.handlers import EpochScores


def _batches(n: int, batch: int, pred_shape: tuple[int, ...], label_shape: tuple[int, ...], offset: float = 0.0):
    out = []
    for first in range(0, n, batch):
        ids = torch.arange(first, min(n, first + batch), dtype=torch.float32) + offset
        out.append({"pred": ids.reshape(-1, *[1] * len(pred_shape)).expand(-1, *pred_shape).clone(),
                    "label": (ids % 2).reshape(-1, *[1] * len(label_shape)).expand(-1, *label_shape).clone()})
    return out


@pytest.mark.parametrize(("pred_shape", "label_shape"), [((1,), (1,)), ((3,), (3,)), ((1, 4, 5), (1, 4, 5)),
                                                        ((2,), ())])
def test_scores_the_whole_epoch_in_the_outputs_own_shape(pred_shape, label_shape) -> None:
    seen: dict[str, torch.Tensor] = {}

    def score(p: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        seen["p"], seen["y"] = p, y
        return {"mean": p.mean(), "n": p.shape[0]}

    engine = Engine(lambda e, b: b)
    EpochScores(score).attach(engine, "val_scores")
    engine.run(_batches(10, 4, pred_shape, label_shape), max_epochs=1)
    assert seen["p"].shape == (10, *pred_shape) and seen["y"].shape == (10, *label_shape)
    assert seen["p"].dtype == torch.float32 == seen["y"].dtype
    assert torch.equal(seen["p"].reshape(10, -1)[:, 0], torch.arange(10.0))      # the batches' order
    # flat floats only: no nested dict under the metric's own name (trackers log state.metrics as it is)
    assert engine.state.metrics == {"val_mean": 4.5, "val_n": 10.0}


def test_each_epoch_scores_its_own_outputs() -> None:
    epochs = [_batches(6, 4, (1,), (1,)), _batches(6, 4, (1,), (1,), offset=100.0)]
    engine = Engine(lambda e, b: b)
    means: list[float] = []
    EpochScores(lambda p, y: {"mean": float(p.mean())}, prefix="v_").attach(engine, "scores")

    @engine.on(Events.EPOCH_COMPLETED)   # after the metric's own handler, which was attached first
    def keep(e: Engine) -> None:
        means.append(e.state.metrics["v_mean"])

    for data in epochs:
        engine.run(data, max_epochs=1)
    assert means == [2.5, 102.5]


def test_a_dict_result_is_scored_on_every_process_alike_with_unequal_shards(tmp_path: Path) -> None:
    """21 cases over 2 ranks (11 + 10, unpadded): ignite's own EpochMetric.compute aborts Gloo on that (its
    all_gather needs equal sizes) and cannot broadcast a dict; EpochScores gathers them in the split's order."""
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(f"""
        import json, os, sys
        import torch, torch.distributed as dist
        from ignite.engine import Engine, Events
        from monai.data import DataLoader
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from medtasks.engine import distributed
        from medtasks.engine.handlers import EpochScores

        dist.init_process_group("gloo")
        data = [{{"x": torch.full((1, 2, 2), float(i)), "y": torch.tensor([float(i % 3 == 0)])}} for i in range(21)]
        loader, sharded = distributed.shard_eval_loader(DataLoader(data, batch_size=4))
        seen = {{}}

        def score(p, y):
            seen["order"] = p[:, 0, 0, 0].tolist()
            return {{"n": p.shape[0], "pos": float(y.sum()), "loss": float(torch.nn.functional.mse_loss(p, 2 * p))}}

        engine = Engine(lambda e, b: {{"pred": b["x"], "label": b["y"]}})
        EpochScores(score, sharded=sharded).attach(engine, "val_scores")
        engine.run(loader, max_epochs=2)
        out = {{"sharded": sharded, "rows": len(loader.sampler), "metrics": engine.state.metrics, **seen}}
        with open(os.path.join({str(tmp_path)!r}, f"rank{{dist.get_rank()}}.json"), "w") as fh:
            json.dump(out, fh)
        dist.destroy_process_group()
    """))
    env = {k: v for k, v in os.environ.items() if k not in distributed.TORCHRUN_ENV}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(worker)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["sharded"] for r in ranks] == [True, True] and [r["rows"] for r in ranks] == [11, 10]
    x = torch.arange(21.0)
    want = {"val_n": 21.0, "val_pos": 7.0, "val_loss": float(torch.nn.functional.mse_loss(x, 2 * x))}
    for r in ranks:
        assert r["metrics"] == want and r["order"] == x.tolist()
