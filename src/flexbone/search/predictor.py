"""The once-for-all accuracy predictor, with FBNetV3's proxy pre-training.

An MLP (3 x 400, ReLU -> 1) reads the one-hot features of a sub-network (:mod:`.encoding`) and predicts its
top-1. Its output bias starts at the mean accuracy of the rows it is fitted on (internally it is trained on
standardised targets and the scale is folded back into the last layer, so the learning rate does not depend on
whether accuracies are fractions or percentages).

FBNetV3 (Dai et al., 2021) pre-trains the predictor's trunk on targets that cost nothing to compute - MACs and
parameters of thousands of configurations - then fine-tunes it on the few measured accuracies::

    pred = AccuracyPredictor(space)
    pred.pretrain(many_cfgs, {"macs": macs, "params": params})   # proxies, normalised per column
    pred.fit(measured_cfgs, top1)                                # new head, bias = mean top-1, whole net trained
    pred.predict([cfg])                                          # numpy array of top-1
    pred.save("predictor.safetensors")                           # + predictor.json (space included)
    AccuracyPredictor.load("predictor.safetensors", space)       # refuses another space

``benchmarks/bench_predictor_pretraining.py`` measures what pre-training buys on a digits supernet.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..elastic.space import SearchSpace, SubnetConfig
from ..errors import CheckpointError, ConfigError
from .encoding import GeneLayout

FORMAT = "flexbone-predictor/1"


class AccuracyPredictor(nn.Module):
    """MLP over the once-for-all encoding of ``space``: ``layers`` x ``hidden`` ReLU, then one output."""

    def __init__(self, space: SearchSpace, hidden: int = 400, layers: int = 3, seed: int = 0) -> None:
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ConfigError(f"an accuracy predictor needs hidden >= 1 and layers >= 1, got {hidden}, {layers}")
        self.space = space
        self.layout = GeneLayout(space)
        self.hidden, self.num_layers = hidden, layers
        self.info: dict[str, Any] = {}  # what it was fitted / pre-trained on (saved in the JSON)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dims = [self.layout.num_features] + [hidden] * layers
            self.trunk = nn.Sequential(*[m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())])
            self.head = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, num_features)`` -> ``(N,)`` predicted accuracies."""
        return self.head(self.trunk(features)).squeeze(-1)

    # --------------------------------------------------------------------------------- predicting
    @torch.no_grad()
    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        """Predicted accuracy of rows of genes (:class:`~.encoding.GeneLayout`), one batched forward."""
        x = torch.from_numpy(self.layout.encode(genes))
        with _one_thread(len(x) <= 4096):
            return self(x).double().numpy()

    def predict(self, cfgs: Sequence[SubnetConfig]) -> np.ndarray:
        """Predicted accuracy of each configuration."""
        return self.predict_genes(self.layout.to_genes(list(cfgs)))

    # ---------------------------------------------------------------------------------- training
    def pretrain(self, cfgs: Sequence[SubnetConfig], proxies: Mapping[str, Sequence[float]] | np.ndarray,
                 steps: int = 1000, lr: float = 1e-3, batch_size: int = 256, seed: int = 0,
                 progress: bool = False) -> float:
        """FBNetV3: train the trunk to predict proxy targets of ``cfgs`` (columns normalised to zero mean and
        unit variance), through a temporary linear head. Returns the final training MSE (normalised units)."""
        if isinstance(proxies, Mapping):
            names = list(proxies)
            y = np.stack([np.asarray(proxies[k], dtype=np.float64) for k in names], 1)
        else:
            y = np.asarray(proxies, dtype=np.float64).reshape(len(cfgs), -1)
            names = [f"proxy{i}" for i in range(y.shape[1])]
        _check_rows(cfgs, y)
        std = y.std(0)
        y = (y - y.mean(0)) / np.where(std > 0, std, 1.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            proxy_head = nn.Linear(self.hidden, y.shape[1])
        loss = _train(nn.Sequential(self.trunk, proxy_head), self.layout.encode_configs(cfgs), y, steps, lr,
                      batch_size, seed, progress=progress and "pre-training predictor")
        self.info["pretrained"] = {"proxies": names, "configs": len(cfgs), "steps": steps, "mse": loss}
        return loss

    def fit(self, cfgs: Sequence[SubnetConfig], accuracy: Sequence[float], steps: int = 1000, lr: float = 1e-3,
            batch_size: int = 64, weight_decay: float = 1e-4, seed: int = 0, progress: bool = False) -> float:
        """Fit to measured accuracies: a fresh head that outputs their mean (zero weight, bias = mean), then the
        whole MLP trained (Adam, MSE, cosine learning rate). Returns the final training MSE in the units of ``accuracy``."""
        y = np.asarray(accuracy, dtype=np.float64)
        _check_rows(cfgs, y)
        mean, std = float(y.mean()), float(y.std()) or 1.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Linear(self.hidden, 1)
        # in standardised units: the untrained predictor says 0, i.e. after folding, exactly the mean accuracy
        # (the reference's base_acc); the zero weight still gets gradients, and through it the trunk
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        loss = _train(self, self.layout.encode_configs(cfgs), (y[:, None] - mean) / std, steps, lr, batch_size, seed,
                      weight_decay, progress=progress and "fitting predictor")
        with torch.no_grad():  # fold the standardisation into the head: outputs in the units of `accuracy`
            self.head.weight.mul_(std)
            self.head.bias.mul_(std).add_(mean)
        self.info["fit"] = {"configs": len(cfgs), "mean": mean, "std": std, "steps": steps, "mse": loss * std ** 2}
        return loss * std ** 2

    # ------------------------------------------------------------------------------- saving
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (``.safetensors``, the weights) and the same name with ``.json`` (space, sizes, fit)."""
        from ..checkpoint import atomic_write, save_state_dict

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ConfigError(f"an accuracy predictor is saved as a .safetensors file (+ .json beside it), got {path}")
        meta = {"format": FORMAT, "space": self.space.to_dict(), "hidden": self.hidden, "layers": self.num_layers,
                "features": self.layout.num_features, **self.info}
        save_state_dict(self.state_dict(), path, metadata={"format": FORMAT})
        atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1) + "\n"))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, space: SearchSpace | None = None) -> "AccuracyPredictor":
        """Read a saved predictor; with ``space``, refuse one that was fitted for another space."""
        from ..checkpoint import read_checkpoint

        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise CheckpointError(f"accuracy predictor not found: {path} and {meta_path.name} beside it are needed")
        try:
            meta = json.loads(meta_path.read_text())
            assert meta.get("format") == FORMAT
            saved = SearchSpace.from_dict(meta["space"])
        except (json.JSONDecodeError, AssertionError, KeyError, TypeError, ConfigError):
            raise CheckpointError(f"{meta_path} is not a flexbone accuracy predictor ({FORMAT})") from None
        if space is not None and saved != space:
            differ = [k for k in sorted(set(saved.to_dict()) | set(space.to_dict()))
                      if saved.to_dict().get(k) != space.to_dict().get(k)]
            raise ConfigError(f"accuracy predictor {path} was fitted for another search space ({saved.name}) than "
                              f"this one ({space.name}); they differ in: {', '.join(differ)}. Fit a new predictor "
                              f"(flexbone search without --predictor)")
        model = cls(saved, hidden=int(meta["hidden"]), layers=int(meta["layers"]))
        state = read_checkpoint(path)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{path} does not fit its own {meta_path.name} ({str(e).splitlines()[0]})") from None
        model.info = {k: v for k, v in meta.items() if k in ("fit", "pretrained")}
        return model.eval()


@contextlib.contextmanager
def _one_thread(enabled: bool = True) -> Iterator[None]:
    """Torch on one thread inside the block. The predictor's work comes in small pieces (a generation of 100 rows,
    a minibatch of 64): a few hundred microseconds each, in which more threads only wait for each other - and on
    a busy machine they wait a lot (10x slower measured with 2 threads on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_rows(cfgs: Sequence[SubnetConfig], y: np.ndarray) -> None:
    if len(cfgs) < 2 or len(cfgs) != len(y):
        raise ConfigError(f"fitting needs at least 2 configurations with one target each, got {len(cfgs)} "
                          f"configurations and {len(y)} targets")
    if not np.isfinite(y).all():
        raise ConfigError("the targets to fit contain NaN or infinite values")


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int, lr: float, batch_size: int, seed: int,
           weight_decay: float = 0.0, progress: str | bool = False) -> float:
    """Adam on the MSE, ``steps`` minibatches drawn by a seeded permutation; returns the last full-data MSE.
    ``progress``: the label of a progress bar (none if false)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(np.asarray(y, dtype=np.float32)).reshape(len(x), -1)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    g = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(x))
    with _one_thread():
        return _train_steps(model, xt, yt, opt, sched, g, steps, batch_size, progress)


def _train_steps(model, xt, yt, opt, sched, g, steps, batch_size, progress) -> float:
    from tqdm.auto import tqdm

    order, pos = torch.randperm(len(xt), generator=g), 0
    model.train()
    for _ in tqdm(range(steps), desc=str(progress), unit="step", disable=not progress, file=sys.stderr, leave=False):
        if pos + batch_size > len(xt):
            order, pos = torch.randperm(len(xt), generator=g), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        loss = nn.functional.mse_loss(model(xt[idx]).reshape(len(idx), -1), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(xt).reshape(len(xt), -1), yt))


def read_subnets_csv(path: str | os.PathLike, space: SearchSpace | None = None) -> tuple[list[SubnetConfig], list[float]]:
    """The (config, top-1) rows of a CSV written by ``flexbone subnets`` (columns ``config``, ``top1``).

    With ``space``, every config must belong to it (a config without a resolution takes the space's only one,
    if it has exactly one)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sub-network table not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"config", "top1"} <= set(rows[0]):
        raise ConfigError(f"{path} is not a `flexbone subnets` table (it needs the columns config and top1)")
    cfgs, top1 = [], []
    for i, r in enumerate(rows, 2):
        try:
            cfg = SubnetConfig.from_json(r["config"])
            if space is not None:
                if cfg.resolution is None and len(space.resolution) == 1:
                    cfg = cfg.replace(resolution=space.resolution[0])
                cfg = space.validate(cfg)
            cfgs.append(cfg)
            top1.append(float(r["top1"]))
        except (ConfigError, ValueError) as e:
            raise ConfigError(f"{path} line {i}: {e}") from None
    return cfgs, top1
