"""What the DDP tests start under torchrun: ``medtasks`` in each worker, with two test-only probes.

- every worker writes its pid to ``$DDP_TEST_DIR/pid-<restart>-<rank>`` (the kill test signals one);
- every rank other than 0 records, through a Python audit hook, each file it opens for writing, renames,
  removes or creates a folder for under ``$DDP_TEST_WATCH``, and at exit writes that list as JSON to
  ``$DDP_TEST_DIR/writes-<restart>-<rank>.json`` (the test asserts it is empty).

Usage: ``torchrun ... tests/engine/ddp_worker.py run <task> ...`` (the arguments of ``medtasks``).
"""

from __future__ import annotations

import json
import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def main() -> int:
    out = os.environ["DDP_TEST_DIR"]
    watch = os.path.realpath(os.environ.get("DDP_TEST_WATCH", "/nonexistent"))
    rank, restart = os.environ.get("RANK", "0"), os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    with open(os.path.join(out, f"pid-{restart}-{rank}"), "w") as fh:
        fh.write(str(os.getpid()))
    seen: list[list[str]] = []

    def under(path: object) -> bool:
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(watch)
        except (TypeError, ValueError):
            return False

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
            if writes and under(args[0]):
                seen.append([event, os.fsdecode(args[0])])
        elif event == "shutil.copyfile" and len(args) > 1 and under(args[1]):   # (src, dst): dst is written
            seen.append([event, os.fsdecode(args[1])])
        elif event == "os.rename" and len(args) > 1 and (under(args[0]) or under(args[1])):
            seen.append([event, os.fsdecode(args[1])])
        elif event in ("os.remove", "os.mkdir", "os.rmdir") and args and under(args[0]):
            seen.append([event, os.fsdecode(args[0])])

    if rank != "0":
        sys.addaudithook(hook)
    from medtasks.cli import main as cli_main

    try:
        return cli_main(sys.argv[1:])
    finally:
        if rank != "0":
            with open(os.path.join(out, f"writes-{restart}-{rank}.json"), "w") as fh:
                json.dump(seen, fh)


if __name__ == "__main__":
    sys.exit(main())
