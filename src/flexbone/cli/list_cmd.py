"""`flexbone list [PATTERN]`: the registered models with their size and cost."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import FlexboneError
from ..options import int_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list models with parameters and MACs at 224 px",
                       description="List registered models (shell-style PATTERN, e.g. 'resnet*') with "
                                   "their family, parameter count and MACs (multiply-accumulates, batch 1).")
    p.add_argument("pattern", nargs="?", default="", help="wildcard filter, e.g. 'resnet*' (default: all)")
    p.add_argument("--family", default=None, help="only this family, e.g. resnet")
    p.add_argument("--img-size", type=int_range(1), default=224, metavar="N", help="input size for MACs (default 224)")
    p.add_argument("--no-macs", action="store_true", help="skip counting MACs (faster)")
    p.add_argument("--names", action="store_true", help="print only the names, one per line (instant)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def model_rows(names: list[str], img_size: int = 224, macs: bool = True, progress: bool = True) -> list[dict[str, Any]]:
    """Name, family, parameters and MACs of each model (built on the meta device: no weights allocated)."""
    from tqdm import tqdm

    from ..bench.complexity import model_complexity
    from ..models import model_family

    rows = []
    # tqdm shows a bar only on a terminal and only once the listing has taken more than a second
    for name in tqdm(names, desc="counting", unit="model", leave=False, delay=1.0, file=sys.stderr,
                     disable=None if progress else True):
        row: dict[str, Any] = {"name": name, "family": model_family(name)}
        try:
            c = model_complexity(name, img_size=img_size, macs=macs)
            row["params"], row["macs"] = c.params, c.macs
        except FlexboneError:
            raise
        except Exception as e:  # one broken model must not hide the others; say which and why
            print(f"flexbone: warning: {name}: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
            row["params"], row["macs"] = None, None
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    from ..bench.report import format_table
    from ..models import list_models

    if args.img_size < 1:
        raise FlexboneError(f"--img-size must be at least 1, not {args.img_size}")
    names = list_models(args.pattern, family=args.family)
    if not names:
        raise FlexboneError(_no_match_message(args.pattern, args.family))
    if args.names:
        print("\n".join(names))
        return 0
    rows = model_rows(names, args.img_size, macs=not args.no_macs)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ["model", "family", "params (M)"]
    if not args.no_macs:
        headers.append(f"MACs (G) @{args.img_size}")
    table = []
    for r in rows:
        line = [r["name"], r["family"], _scaled(r["params"], 1e6)]
        if not args.no_macs:
            line.append(_scaled(r["macs"], 1e9))
        table.append(line)
    print(format_table(headers, table, align="llrr"))
    print(f"{len(rows)} model(s)")
    return 0


def _no_match_message(pattern: str, family: str | None) -> str:
    from ..errors import did_you_mean
    from ..models import list_models

    what = " and ".join(x for x in (f"pattern {pattern!r}" if pattern else "",
                                    f"family {family!r}" if family else "") if x)
    hint = ""
    if pattern and not any(c in pattern for c in "*?["):
        prefixed = list_models(pattern + "*", family=family)
        hint = f" Try '{pattern}*' ({len(prefixed)} models)." if prefixed else did_you_mean(pattern, list_models())
    return f"no model matches {what}.{hint} `flexbone list` shows all {len(list_models())} models"


def _scaled(v: int | None, unit: float) -> str:
    return "-" if v is None else f"{v / unit:.2f}"
