"""``lstmkit study run|analyse|export``: the command line of :mod:`lstmkit.study`.

Only argparse is imported here, so ``lstmkit --help`` works without the
``study`` extra; Optuna, Dask and music21 load when a study command runs.
"""
from __future__ import annotations

import shlex
import sys


def add_study_parser(subparsers):
    study = subparsers.add_parser(
        "study", help="Greff et al.'s search-space study of the LSTM variants, on Dask",
        description="Random search over Greff et al.'s hyper-parameters for every LSTM variant, "
                    "trials on Dask, results in Optuna storage (needs pip install lstmkit[study])")
    commands = study.add_subparsers(dest="study_command", required=True)
    run = commands.add_parser("run", help="run or resume a study")
    run.add_argument("--task", choices=("jsb", "adding"), default="jsb")
    run.add_argument("--storage", required=True,
                     help="Optuna storage: a journal file (e.g. study.log), *.db for SQLite, or a URL")
    run.add_argument("--trials-per-variant", type=int, required=True)
    run.add_argument("--variants", default=None, help="comma-separated, e.g. V,NFG,CIFG (default: all)")
    run.add_argument("--size", choices=("tiny", "small"), default="small")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--scheduler", default="local",
                     help="'local' (embedded LocalCluster, default), 'inline' (one process, no Dask) "
                          "or an existing cluster's address, tcp://HOST:PORT")
    run.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: one per core)")
    run.add_argument("--export", default=None, help="also write the finished trials to this JSON file")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    analyse = commands.add_parser("analyse", help="tables, Welch's t-tests, fANOVA and plots of a study")
    source = analyse.add_mutually_exclusive_group(required=True)
    source.add_argument("--storage", help="Optuna storage the study ran in")
    source.add_argument("--json", help="a JSON file written by --export or 'study export'")
    analyse.add_argument("--task", action="append", choices=("jsb", "adding"),
                         help="task(s) to analyse (default: every task found)")
    analyse.add_argument("--plots", default=None, help="write box and learning-rate plots (PNG) here")
    export = commands.add_parser("export", help="write a study's finished trials to JSON")
    export.add_argument("--storage", required=True)
    export.add_argument("--out", required=True)
    return study


def run_command(args, argv=None):
    from . import study

    command = "python -m lstmkit " + shlex.join(argv if argv is not None else sys.argv[1:])
    if args.study_command == "run":
        variants = None if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
        result = study.run_study(args.task, args.storage, trials_per_variant=args.trials_per_variant,
                                 variants=variants, size=args.size, seed=args.seed, scheduler=args.scheduler,
                                 workers=args.workers, progress=not args.quiet, command=command)
        records = study.study_records(result)
        session = result.user_attrs["sessions"][-1]
        print(f"{args.task}: {len(records)} finished trials in the storage; this session ran "
              f"{session['trials']} in {session['wall_seconds']:.0f} s on {session['workers']} worker(s)")
        if args.export:
            study.export_json(args.storage, args.export, command=command)
            print(f"wrote {args.export}")
        return 0
    if args.study_command == "export":
        study.export_json(args.storage, args.out, command=command)
        print(f"wrote {args.out}")
        return 0
    if args.json:
        document = study.load_json(args.json)
    else:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as scratch:
            document = study.export_json(args.storage, Path(scratch) / "study.json")
    tasks = args.task or list(document["tasks"])
    for task in tasks:
        if task not in document["tasks"]:
            print(f"no study of task {task!r} here (found {list(document['tasks'])})", file=sys.stderr)
            return 2
        records = document["tasks"][task]["trials"]
        print(f"\n== {task}: {len(records)} trials ==")
        print(study.format_table(study.summary_table(records)))
        print("fANOVA importance:", ", ".join(f"{k} {v:.2f}" for k, v in study.fanova_importances(records).items()))
        if args.plots:
            _save_plots(study, task, records, args.plots)
    return 0


def _save_plots(study, task, records, directory):
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    fig, (ax_all, ax_best) = plt.subplots(1, 2, figsize=(10, 4))
    study.plot_boxes(records, ax_all, ax_best)
    fig.savefig(out / f"study_{task}_boxes.png", bbox_inches="tight", metadata={"Software": None})
    fig, ax = plt.subplots(figsize=(6, 4))
    study.plot_learning_rate(records, ax)
    fig.savefig(out / f"study_{task}_learning_rate.png", bbox_inches="tight", metadata={"Software": None})
    plt.close("all")
    print(f"plots in {out}")
