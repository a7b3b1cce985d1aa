"""Presenting measurements: plain-text tables for the terminal, JSON / CSV / markdown files."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError

RESULT_FORMATS = (".json", ".csv")


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median of the population ``values`` were drawn from
    (e.g. one figure per fresh process): ``(low, high, coverage)``.

    The interval runs from the k-th smallest to the k-th largest value, with the largest k whose coverage,
    ``1 - 2 P(B < k)`` for B ~ Binomial(n, 1/2), is still at least ``confidence``. With too few values for that
    (n < 6 at 95 %) it is the whole range, and ``coverage`` says how much less it covers."""
    x = sorted(values)
    n = len(x)
    if n == 0:
        raise ValueError("median_interval of no values")
    k, below = 1, 1  # below = C(n, 0) + ... + C(n, k - 1)
    low, high, coverage = x[0], x[-1], 1 - 2 * below / 2 ** n
    while k < (n + 1) // 2:
        below += math.comb(n, k)
        k += 1
        wider = 1 - 2 * below / 2 ** n
        if wider < confidence:
            break
        low, high, coverage = x[k - 1], x[n - k], wider
    return low, high, coverage


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A fixed-width text table. ``align`` has one character per column, ``l`` or ``r`` (default: text
    left, numbers right)."""
    cells = [[_cell(v) for v in row] for row in rows]
    if align is None:
        align = "".join("r" if rows and isinstance(rows[0][i], (int, float)) else "l" for i in range(len(headers)))
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(values, widths, align)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def format_markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def add_run_options(parser: Any, out_dir: Path, warmup: int, repeats: int, processes: int | None = None,
                    repeats_help: str = "timed rounds") -> None:
    """The options every benchmark script shares: ``--threads``, ``--warmup``, ``--repeats``, (``--processes``),
    ``--out-dir``; the defaults are the script's."""
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed steps (default {warmup})")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"{repeats_help} (default {repeats})")
    if processes is not None:
        parser.add_argument("--processes", type=int, default=processes,
                            help=f"fresh processes per case (default {processes})")
    parser.add_argument("--out-dir", type=Path, default=out_dir, help=f"where to write the results (default {out_dir})")


def report_header(title: str, env: dict[str, Any], threads: int, load_before: Sequence[float],
                  load_after: Sequence[float], packages: Sequence[str] = ()) -> list[str]:
    """The first lines of a benchmark's markdown report: title, command, start time and environment.

    ``env`` is :func:`flexbone.bench.throughput.environment` plus ``command`` and ``started_utc``;
    ``packages`` names further ``<name>_version`` entries of ``env`` to list (e.g. ``("timm",)``)."""
    def load(values: Sequence[float]) -> str:
        return "/".join(f"{v:.2f}" for v in values)

    versions = "".join(f", {name} {env.get(f'{name}_version', '?')}" for name in packages)
    revision = f" (git {env['flexbone_revision']})" if env.get("flexbone_revision") else ""
    return [
        f"# {title}",
        "",
        f"Command: `{env['command']}`  ",
        f"Started: {env['started_utc']}",
        "",
        f"Environment: {env['cpu']} ({env['cpu_count']} logical cores), {env['platform']}, "
        f"Python {env['python_version']}, torch {env['torch_version']}{versions}, flexbone {env['flexbone_version']}"
        f"{revision}; "
        f"{threads} torch threads; load average (1/5/15 min) {load(load_before)} before, {load(load_after)} after.",
    ]


def write_report(out_dir: str | os.PathLike, stem: str, data: dict[str, Any], markdown: str,
                 echo: bool = False) -> tuple[Path, Path]:
    """A benchmark's results: ``<stem>.json`` (every number, environment, command) and ``<stem>.md`` (its
    table) in ``out_dir``, each written atomically. Returns both paths; ``echo`` also prints the markdown and
    where it went."""
    from ..checkpoint import atomic_write

    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    for path, text in ((json_path, json.dumps(data, indent=2) + "\n"), (md_path, markdown)):
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text))
    if echo:
        print(f"\n{markdown}\nwrote {json_path} and {md_path}")
    return json_path, md_path


def check_results_path(path: str | os.PathLike) -> Path:
    """Fail early (before a long measurement) on an output file type we cannot write."""
    path = Path(path)
    if path.suffix.lower() not in RESULT_FORMATS:
        raise ConfigError(f"--out {path}: results are written as .json or .csv, not {path.suffix or 'no extension'!r}")
    return path


def write_results(path: str | os.PathLike, rows: Sequence[dict[str, Any]], **extra: Any) -> Path:
    """Write ``rows`` (one dict per result) to ``path``: ``.json`` = ``{**extra, "results": rows}``;
    ``.csv`` = one line per row (``extra`` values that are flat are added as columns)."""
    from ..checkpoint import atomic_write

    path = check_results_path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps({**extra, "results": list(rows)}, indent=2) + "\n"
    else:
        flat_extra = {k: v for k, v in extra.items() if isinstance(v, (str, int, float, bool)) or v is None}
        fieldnames: list[str] = []
        for row in rows:
            fieldnames += [k for k in row if k not in fieldnames]
        fieldnames += [k for k in flat_extra if k not in fieldnames]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fieldnames)
        writer.writeheader()
        for row in rows:
            writer.writerow({**flat_extra, **row})
        text = buf.getvalue()

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            f.write(text)

    return atomic_write(path, write)
