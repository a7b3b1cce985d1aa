"""Run logs: per-epoch metrics as CSV and JSON lines, per-step loss/lr as JSON lines, a PNG of the curves.

Files in the run directory (written by rank 0 only):

    metrics.csv      one row per epoch: epoch, step, lr, train_loss, eval_top1, eval_top5, ...
    metrics.jsonl    the same rows as JSON objects (one per line)
    steps.jsonl      every ``log_interval`` optimiser steps: step, epoch, loss, lr, img_per_s
    curves.png       loss / accuracy / learning-rate curves (matplotlib, Agg backend)
    tensorboard/     event files, when ``train.tensorboard`` is on and tensorboard is installed

On resume the logs are cut back to the checkpoint's position first, so a resumed run never shows an
epoch twice.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping

METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"
STEPS_JSONL = "steps.jsonl"
CURVES_PNG = "curves.png"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write
                continue
    return rows


class MetricsLogger:
    """Appends epoch and step records to the run directory; does nothing when ``enabled`` is False."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = False):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.epochs: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                print("flexbone: train.tensorboard is on but tensorboard is not installed; "
                      "writing CSV and JSON lines only")

    def truncate(self, epoch: int, step: int) -> None:
        """Keep only the records before ``epoch`` / up to ``step`` (a checkpoint's position; 0, 0 = start afresh)."""
        if not self.enabled:
            return
        self.epochs = [r for r in _read_jsonl(self.run_dir / METRICS_JSONL) if r.get("epoch", math.inf) < epoch]
        self.steps = [r for r in _read_jsonl(self.run_dir / STEPS_JSONL) if r.get("step", math.inf) <= step]
        self._rewrite()

    def _rewrite(self) -> None:
        (self.run_dir / METRICS_JSONL).write_text("".join(json.dumps(r) + "\n" for r in self.epochs))
        (self.run_dir / STEPS_JSONL).write_text("".join(json.dumps(r) + "\n" for r in self.steps))
        self._write_csv()

    def _write_csv(self) -> None:
        # columns = union of keys in first-seen order (eval columns appear only on evaluated epochs)
        columns: list[str] = []
        for r in self.epochs:
            columns += [k for k in r if k not in columns]
        with open(self.run_dir / METRICS_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.epochs)

    def log_step(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        record = dict(record)
        self.steps.append(record)
        with open(self.run_dir / STEPS_JSONL, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k in ("loss", "lr", "img_per_s"):
                if k in record:
                    self._tb.add_scalar(f"train_step/{k}", record[k], record["step"])

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        record = dict(record)
        self.epochs.append(record)
        with open(self.run_dir / METRICS_JSONL, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv()  # rewritten whole: a new eval column may appear
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self._tb.add_scalar(f"epoch/{k}", v, record["epoch"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def plot_metrics(run_dir: str | Path, epochs: list[Mapping[str, Any]], steps: list[Mapping[str, Any]],
                 title: str = "", metrics: Mapping[str, str] | None = None) -> Path:
    """Loss, accuracy and learning-rate curves of a run as ``curves.png``; ``metrics`` ({name: label}, default
    top-1 and top-5) are the evaluation columns ``eval_<name>`` drawn, the first also for the EMA weights."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    path = Path(run_dir) / CURVES_PNG
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(15, 4))
    if steps:
        spe = max(1, epochs[0].get("steps_per_epoch", 1)) if epochs else 1
        x = [s["step"] / spe for s in steps]
        ax_loss.plot(x, [s["loss"] for s in steps], lw=0.8, alpha=0.5, label="train (per step)")
        ax_lr.plot(x, [s["lr"] for s in steps], lw=1.2)
    ep = [r["epoch"] + 1 for r in epochs]
    ax_loss.plot(ep, [r["train_loss"] for r in epochs], "o-", label="train (epoch mean)")
    metrics = dict(metrics or {"top1": "top-1", "top5": "top-5"})
    first = next(iter(metrics))
    evaluated = [r for r in epochs if f"eval_{first}" in r]
    if evaluated:
        ev = [r["epoch"] + 1 for r in evaluated]
        ax_loss.plot(ev, [r["eval_loss"] for r in evaluated], "s-", label="eval (cross-entropy)")
        for (name, label), style in zip(metrics.items(), ("o-", "s--", "d:", "v-.")):
            ax_acc.plot(ev, [r[f"eval_{name}"] for r in evaluated], style, label=label)
        if any(f"ema_{first}" in r for r in evaluated):
            ax_acc.plot([r["epoch"] + 1 for r in evaluated if f"ema_{first}" in r],
                        [r[f"ema_{first}"] for r in evaluated if f"ema_{first}" in r], "^-", label=f"EMA {metrics[first]}")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(title="evaluation accuracy (%)", xlabel="epoch")
    ax_lr.set(title="learning rate", xlabel="epoch")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    ax_lr.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
