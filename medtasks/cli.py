"""``medtasks`` command line: thin argument parsing over :mod:`medtasks.api` (heavy imports inside)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger("medtasks")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medtasks", description="Medical-imaging tasks of the source reports, on MONAI.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list the tasks, their kind and source report")

    r = sub.add_parser("run", help="train + evaluate + report (no --manifest: embedded synthetic default)")
    r.add_argument("task")
    r.add_argument("overrides", nargs="*", help="config overrides key.path=value, e.g. train.epochs=3")
    r.add_argument("--manifest", help="CSV made by `medtasks prepare` (default: synthetic demo data)")
    r.add_argument("--config", help="YAML config (default: the packaged <task>.yaml, or .demo.yaml without --manifest)")
    r.add_argument("--runs-dir", default="runs", help="parent of run directories (default: ./runs)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoints/last.pt")
    r.add_argument("--protocol", choices=("medtasks", "report"), default=None,
                   help="report: the source report's own evaluation protocol (configs/<task>.report.yaml laid over "
                        "the config), flaws included and marked on the report; default: medtasks' held-out protocol")
    r.add_argument("--nproc", type=int, metavar="N",
                   help="train data-parallel in N processes on this machine (one per GPU; Gloo on CPU): starts "
                        "`torchrun --standalone --nproc_per_node N -m medtasks run ...` (multi-node: run torchrun "
                        "yourself)")
    r.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="with --nproc: torchrun restarts failed workers up to K times; the run resumes from last.pt")

    c = sub.add_parser("config", help="show where a task's config is, or write it resolved to a file to edit")
    c.add_argument("task")
    c.add_argument("--demo", action="store_true", help="the embedded default's demo profile")
    c.add_argument("--out", help="write the resolved config here (stands alone: no base:, every key)")
    c.add_argument("--protocol", choices=("medtasks", "report"), default=None,
                   help="report: with the source report's protocol profile laid over it")

    pr = sub.add_parser("prepare", help="dataset layout -> manifest CSV + rejected.csv")
    pr.add_argument("task")
    pr.add_argument("--source", required=True, help="the public dataset's folder")
    pr.add_argument("--out", required=True, help="manifest CSV to write")
    pr.add_argument("--labels", help="label file (ich_classify: stage_2_train.csv)")
    pr.add_argument("--workers", type=int, help="parallel header readers (default: all cores)")

    pd_ = sub.add_parser("predict", help="predict with a trained run on a file or folder")
    pd_.add_argument("task")
    pd_.add_argument("--run", required=True, help="run directory")
    pd_.add_argument("--input", required=True,
                     help="input file or folder (ich_classify: DICOM), or dicomweb:<base-url>/studies/<uid>"
                          "[/series/<uid>] (credentials: MEDTASKS_DICOMWEB_TOKEN, or _USER + _PASSWORD, or netrc)")
    pd_.add_argument("--out", help="output folder (default: <run>/predict/<timestamp>)")
    pd_.add_argument("--store", metavar="BASE_URL",
                     help="send the DICOM outputs (SEG of segmentation tasks, SR of classifiers) to this DICOMweb "
                          "server with STOW-RS, e.g. https://pacs.example.org/dicom-web")
    pd_.add_argument("--probabilities", action="store_true",
                     help="segmentation tasks: also write the probability maps (probabilities/<case>.nii.gz or .png)")

    rp = sub.add_parser("report", help="re-render report.html from a run directory")
    rp.add_argument("run_dir")

    ev = sub.add_parser("evaluate", help="a trained run on another labelled manifest (external validation) -> "
                                         "<run>/evaluate/<timestamp>/ with predictions, metrics (CIs) and report")
    ev.add_argument("task")
    ev.add_argument("--run", required=True, help="run directory")
    ev.add_argument("--manifest", required=True, help="labelled manifest (the task's schema), e.g. another hospital's")
    ev.add_argument("--split", help="only the rows of this split (default: every row)")
    ev.add_argument("--out", help="output folder (default: <run>/evaluate/<timestamp>)")
    ev.add_argument("--by", action="append", default=[], metavar="COLUMN",
                    help="subgroup tables by this manifest column (sex, age, manufacturer, site, ...; repeatable): "
                         "every metric per value with its CI and the difference to the rest")

    ex = sub.add_parser("export", help="the trained network as TorchScript or ONNX + a JSON preprocessing contract, "
                                       "checked against torch on the run's own test inputs; or a MONAI bundle")
    ex.add_argument("task")
    ex.add_argument("--run", required=True, help="run directory")
    ex.add_argument("--format", required=True, choices=("torchscript", "onnx", "bundle"))
    ex.add_argument("--out", help="output folder (default: <run>/export/<format>)")
    ex.add_argument("--n-inputs", type=int, default=8, help="test rows the parity check runs on (default 8)")

    rr = sub.add_parser("reproduce", help="re-run a finished run from its record (config, split manifest, seed) "
                                          "into a new run directory and compare metrics.json; exit 1 if they differ")
    rr.add_argument("run_dir")
    rr.add_argument("--runs-dir", help="parent of the new run directory (default: the original's)")
    rr.add_argument("--tolerance", type=float, default=None,
                    help="largest absolute difference allowed per metric (default: 0 on the same machine and "
                         "software for a CPU run, 0.01 elsewhere)")

    from medtasks.compare import add_compare_parser

    add_compare_parser(sub)

    b = sub.add_parser("bench",
                       help="ich_classify: input pipeline vs bare decode and vs the same steps as MONAI transforms; "
                            "ms_segment: network FPS vs smp / MONAI")
    b.add_argument("task")
    b.add_argument("--input", help="folder of inputs (default: synthetic files)")
    b.add_argument("--n", type=int, default=None, help="number of files (default 200); ms_segment: frames (default 16)")
    b.add_argument("--size", type=int, default=256, help="ms_segment: input side in pixels")
    b.add_argument("--batch", type=int, default=4, help="ms_segment: batch size")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--cache-epochs", type=int, default=0, metavar="N",
                   help="ich_classify: also time N training epochs with no cache and with data.cache=disk")
    return p


def strip_launch_options(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--max-restarts K`` (either spelling ``--opt V`` or ``--opt=V``).

    Example:
        >>> strip_launch_options(["run", "phe_classify", "--nproc", "2", "train.epochs=1", "--max-restarts=1"])
        ['run', 'phe_classify', 'train.epochs=1']
    """
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--nproc", "--max-restarts"):
            skip = True
        elif not a.startswith(("--nproc=", "--max-restarts=")):
            out.append(a)
    return out


def _torchrun(argv: list[str], nproc: int, max_restarts: int) -> int:
    """``medtasks run ... --nproc N``: the same command under ``torchrun --standalone`` (one machine)."""
    import os
    import subprocess

    if nproc < 1:
        print("medtasks run: error: --nproc must be >= 1", file=sys.stderr)
        return 2
    if "WORLD_SIZE" in os.environ:
        print("medtasks run: error: --nproc inside torchrun: drop --nproc (torchrun already started the processes)",
              file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           f"--max-restarts={max(0, max_restarts)}", "-m", "medtasks", *strip_launch_options(argv)]
    log.info("starting %s", " ".join(cmd[1:]))
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # key=value overrides may come before or after options (argparse cannot intermix them with subcommands)
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if not (args.command == "run" and "=" in e and not e.startswith("-"))]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "run":
        args.overrides = list(args.overrides) + [e for e in extra if e not in unknown]
        if args.nproc is not None:
            return _torchrun(list(sys.argv[1:] if argv is None else argv), args.nproc, args.max_restarts)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from medtasks import api
    from medtasks.config import ConfigError
    from medtasks.engine.export import ExportError
    from medtasks.registry import UnknownNameError

    try:
        if args.command == "list":
            rows = api.list_tasks()
            print(f"{'task':<16}{'kind':<14}{'source report':<38}summary")
            for t in rows:
                print(f"{t['name']:<16}{t['kind']:<14}{t['source']:<38}{t['summary']}")
        elif args.command == "run":
            from medtasks.report.text import run_summary

            rd, metrics = api.run(args.task, manifest=args.manifest, config=args.config, overrides=args.overrides,
                                  runs_dir=args.runs_dir, resume=args.resume, protocol=args.protocol)
            from medtasks.engine import distributed
            from medtasks.rundir import append_run_log

            if distributed.is_main():  # the other torchrun ranks trained; rank 0 evaluated and reports
                summary = f"{run_summary(args.task, metrics)}\n\nreport: {(rd / 'report.html').resolve()}"
                print(summary)
                append_run_log(rd, summary)
            distributed.shutdown()
        elif args.command == "config":
            path = api.default_config(args.task, demo=args.demo)
            overlays = api.protocol_overlay(args.task, args.protocol)
            if args.out:
                out = api.write_resolved_config(args.task, path, args.out, protocol=args.protocol)
                print(f"config: {out} (from {' + '.join(str(p) for p in [path, *overlays])})")
            else:
                print("\n".join(str(p) for p in [path, *overlays]))
        elif args.command == "prepare":
            opts = {k: v for k, v in (("labels", args.labels), ("workers", args.workers)) if v is not None}
            res = api.prepare(args.task, args.source, args.out, **opts)
            print(f"manifest: {res.manifest} ({res.n_rows} rows); rejected: {res.rejected} ({res.n_rejected} rows)")
        elif args.command == "predict":
            out = api.predict(args.task, args.run, args.input, args.out, probabilities=args.probabilities,
                              store=args.store)
            print(f"predictions: {out / 'predictions.csv'}")
            record = json.loads((out / "predict.json").read_text(encoding="utf-8"))
            for rel in record.get("dicom_outputs", []):
                print(f"DICOM: {out / rel}")
            if "stored" in record:
                print(f"stored {len(record['stored']['sop_instance_uids'])} object(s) on {record['stored']['server']}")
        elif args.command == "report":
            print(f"report: {api.report(args.run_dir)}")
        elif args.command == "evaluate":
            from medtasks.report.text import run_summary

            out, metrics = api.evaluate(args.task, args.run, args.manifest, split=args.split, out=args.out,
                                        by=args.by)
            print(f"{run_summary(args.task, metrics)}\n\nexternal evaluation: {(out / 'report.html').resolve()}")
        elif args.command == "export":
            from medtasks.engine.export import describe

            out, sidecars = api.export(args.task, args.run, args.format, args.out, n_inputs=args.n_inputs)
            print(describe(sidecars, out))
        elif args.command == "reproduce":
            from medtasks.reproduce import format_result

            rd, result = api.reproduce(args.run_dir, runs_dir=args.runs_dir, tolerance=args.tolerance)
            for line in result["environment_differences"]:
                print(f"differs: {line}")
            print(format_result(result))
            print(f"new run: {rd.path}  (comparison: {rd / 'reproduce.json'})")
            return 0 if result["ok"] else 1
        elif args.command == "compare":
            from medtasks.compare import run_compare

            return run_compare(args)
        elif args.command == "bench":
            from medtasks.bench import bench

            n = args.n if args.n is not None else (16 if args.task == "ms_segment" else 200)
            res = bench(args.task, input_path=args.input, n=n, repeats=args.repeats, size=args.size, batch=args.batch,
                        cache_epochs_n=args.cache_epochs)
            for k, v in res.items():
                print(f"{k}: {v}")
    except (UnknownNameError, ConfigError, FileNotFoundError, ValueError, ExportError) as exc:
        print(f"medtasks {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
