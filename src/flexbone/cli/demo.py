"""`flexbone demo` (what `make demo` runs): train a small ResNet on real handwritten digits, on the CPU.

The `quickstart` recipe (recipes/quickstart.yaml): scikit-learn's 1,797 real 8x8 scans of handwritten
digits (bundled with scikit-learn, nothing is downloaded), a fixed seeded 80/20 split, a small-stem ResNet.
Prints the test top-1 and where the checkpoint, the resolved recipe, the metrics log and the plot are.
"""
from __future__ import annotations

import argparse
import time

from ..options import int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small ResNet on the bundled handwritten digits (about a minute, CPU)",
                       description="Train the `quickstart` recipe: a small ResNet on scikit-learn's handwritten "
                                   "digits (real scans, bundled), then report the test top-1 and where the run's "
                                   "files are. Same as `flexbone train --recipe quickstart`.")
    p.add_argument("--threads", type=int_range(1), default=None, metavar="N",
                   help="torch threads (default: chosen as `flexbone train` chooses them; for these tiny steps "
                        "one thread, which a busy machine does not punish)")
    p.add_argument("--output-dir", default="runs", metavar="DIR", help="parent folder of the run (default: runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
