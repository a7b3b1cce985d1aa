"""`flexbone list [PATTERN]`: the registered models with their size and cost."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterator

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


def iter_model_rows(names: list[str], img_size: int = 224, macs: bool = True) -> Iterator[dict[str, Any]]:
    """Name, family, parameters and MACs of each model, one at a time (built on the meta device: no weights)."""
    from ..bench.complexity import model_complexity
    from ..models import model_family

    for name in names:
        row: dict[str, Any] = {"name": name, "family": model_family(name)}
        try:
            c = model_complexity(name, img_size=img_size, macs=macs)
            row["params"], row["macs"] = c.params, c.macs
        except FlexboneError:
            raise
        except Exception as e:  # one broken model must not hide the others; say which and why
            print(f"flexbone: warning: {name}: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
            row["params"], row["macs"] = None, None
        yield row


def model_rows(names: list[str], img_size: int = 224, macs: bool = True, progress: bool = True) -> list[dict[str, Any]]:
    """:func:`iter_model_rows` as a list (with a progress bar on a terminal after a second)."""
    from tqdm import tqdm

    rows = iter_model_rows(names, img_size, macs)
    return list(tqdm(rows, total=len(names), desc="counting", unit="model", leave=False, delay=1.0, file=sys.stderr,
                     disable=None if progress else True))


def run(args: argparse.Namespace) -> int:
    from ..models import list_models, model_family

    names = list_models(args.pattern, family=args.family)
    if not names:
        raise FlexboneError(_no_match_message(args.pattern, args.family))
    if args.names:
        print("\n".join(names))
        return 0
    if args.json:
        print(json.dumps(model_rows(names, args.img_size, macs=not args.no_macs), indent=2))
        return 0
    # the table is printed row by row as each model is counted (all of them take seconds): the widths of the
    # text columns are known from the names, the numbers get a fixed width
    headers = ["model", "family", "params (M)"] + ([] if args.no_macs else [f"MACs (G) @{args.img_size}"])
    widths = [max(len(headers[0]), *map(len, names)), max(len(headers[1]), *(len(model_family(n)) for n in names))]
    widths += [max(len(h), 8) for h in headers[2:]]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    print(line(headers))
    print(line(["-" * w for w in widths]), flush=True)
    count = 0
    for r in iter_model_rows(names, args.img_size, macs=not args.no_macs):
        values = [r["name"], r["family"], _scaled(r["params"], 1e6)]
        if not args.no_macs:
            values.append(_scaled(r["macs"], 1e9))
        print(line(values), flush=True)
        count += 1
    print(f"{count} model(s)")
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
