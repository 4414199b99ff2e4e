"""``medtasks`` with a test-only pace: what tests/engine/test_resume.py starts and then SIGKILLs mid-epoch.

After every training iteration the worker writes ``epoch iteration epoch_length`` to ``$PACED_MARKER``
(atomically: a temporary file renamed over it); from epoch ``$PACED_FROM_EPOCH`` on it then sleeps
``$PACED_SLEEP_S`` seconds, so that the test's SIGKILL lands between two iterations of that epoch and not
after the run has finished. Sleeping draws no random number: the run trains exactly as it would unpaced.

Usage: ``python tests/engine/paced_worker.py run <task> ...`` (the arguments of ``medtasks``).
"""

from __future__ import annotations

import os
import sys
import time


def _pace(engine) -> None:  # noqa: ANN001  (an ignite Engine)
    marker = os.environ["PACED_MARKER"]
    tmp = f"{marker}.tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{engine.state.epoch} {engine.state.iteration} {engine.state.epoch_length}")
    os.replace(tmp, marker)
    if engine.state.epoch >= int(os.environ.get("PACED_FROM_EPOCH", "2")):
        time.sleep(float(os.environ.get("PACED_SLEEP_S", "30")))


def main() -> int:
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    run = SupervisedTrainer.run

    def paced_run(self: SupervisedTrainer) -> None:
        self.add_event_handler(Events.ITERATION_COMPLETED, _pace)
        return run(self)

    SupervisedTrainer.run = paced_run
    from medtasks.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":  # the guard matters: the synthetic-data workers re-import this file
    sys.exit(main())
