"""`flexbone demo` (what `make demo` runs): train a small ResNet on real handwritten digits, on the CPU.

The `quickstart` recipe (recipes/quickstart.yaml): scikit-learn's 1,797 real 8x8 scans of handwritten
digits (bundled with scikit-learn, nothing is downloaded), a fixed seeded 80/20 split, a small-stem ResNet.
Prints the test top-1 and where the checkpoint, the resolved recipe, the metrics log and the plot are.

`flexbone demo elastic` (what `make demo-elastic` runs): train a once-for-all supernet on the same digits with
DεpS, then find and check the best sub-network for three latency budgets on this machine (:mod:`.demo_elastic`).
"""
from __future__ import annotations

import argparse
import time

from ..options import int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small ResNet on the bundled handwritten digits (about a minute, CPU); "
                                    "`demo elastic`: train once, deploy at every budget (< 10 min)",
                       description="Train the `quickstart` recipe: a small ResNet on scikit-learn's handwritten "
                                   "digits (real scans, bundled), then report the test top-1 and where the run's "
                                   "files are. Same as `flexbone train --recipe quickstart`. `flexbone demo elastic` "
                                   "trains a once-for-all supernet on the digits with DεpS, evaluates sub-networks, "
                                   "fits the accuracy predictor, builds a latency table on this machine, searches "
                                   "three latency budgets, checks the chosen sub-networks for real and writes a "
                                   "one-page report.")
    p.add_argument("which", nargs="?", choices=("quickstart", "elastic"), default="quickstart",
                   help="quickstart (default) or elastic")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N",
                   help="torch threads (default: chosen as `flexbone train` chooses them; for these tiny steps "
                        "one thread, which a busy machine does not punish; elastic: 2, also the latency table's)")
    p.add_argument("--epochs", type=int_range(2), default=8, help="elastic: supernet training epochs (default 8)")
    p.add_argument("--n", type=int_range(4), default=40,
                   help="elastic: sub-networks evaluated to fit the accuracy predictor (default 40)")
    p.add_argument("--generations", type=int_range(1), default=500, help="elastic: search generations (default 500)")
    p.add_argument("--seed", type=int_range(0), default=0, help="elastic: training, sampling and search seed")
    p.add_argument("--output-dir", default="runs", metavar="DIR", help="parent folder of the run (default: runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.which == "elastic":
        from .demo_elastic import run as run_elastic

        args.threads = args.threads or 2
        return run_elastic(args)
    from ..config import load_recipe
    from ..train.engine import run as run_training
    from ..train.threads import apply_thread_choice

    start = time.perf_counter()
    recipe = load_recipe("quickstart", {"train.output_dir": args.output_dir})
    # the same thread choice as `flexbone train` (one thread for these tiny steps), so the two runs are equal
    apply_thread_choice(args.threads, batch_size=recipe.data.batch_size, img_size=recipe.data.img_size,
                        loader_workers=recipe.data.workers)
    print(f"flexbone demo: {recipe.description}")
    print(f"  = flexbone train --recipe quickstart --train.output_dir {args.output_dir}\n")
    result = run_training(recipe, recipe_name="quickstart", progress=not args.no_progress)
    print(f"\ndone in {time.perf_counter() - start:.0f} s: test top-1 {result.top1:.2f}% on {recipe.data.dataset} "
          f"(seed {recipe.train.seed}, split seed {recipe.data.digits_split_seed}).")
    print(f"next: flexbone validate --checkpoint {result.weights} --data digits\n"
          f"      flexbone predict --checkpoint {result.weights} IMAGE.png ...")
    return 0
