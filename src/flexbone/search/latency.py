"""Latency of sub-networks on this device: measured, or predicted by a lookup table built here.

* :func:`time_module`: the median latency (ms) of one module on one input batch, in eager PyTorch or in
  onnxruntime (exported through ``torch.onnx`` to a temporary file), after warm-up, with a given number of
  threads, batch size, dtype and memory format.
* :class:`MeasuredLatency`: a cost (``name='latency'``, ms) that extracts ``cfg``'s sub-network and times it.
* :class:`LatencyTable`: the once-for-all lookup table, for any machine. Every part that a sub-network of the
  space can have (stem, each block variant in each slot, head; :mod:`.parts`) is timed once at every input
  size it can meet, per resolution; a sub-network's latency is the sum over its parts. Saved as JSON with
  where and how it was measured (CPU, versions, threads, batch size, backend, date); a table is refused for
  another space. ``flexbone latency-table`` builds one.

The sum of standalone parts misses what a whole network shares between layers (caches warm from the previous
layer, one Python call instead of several), so a table predicts a little more or less than a measurement;
``benchmarks/bench_latency_table.py`` reports how well it ranks and how close it gets on this machine.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn

from ..elastic.space import SearchSpace, SubnetConfig
from ..errors import ConfigError
from ..options import check_range
from .costs import GenePricer
from .encoding import GeneLayout
from .parts import SubnetParts

BACKENDS = ("torch", "onnxruntime")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FORMAT = "flexbone-latency-table/1"
STATISTICS = ("median", "min")  # of the timed calls: the typical call, or the least disturbed one (a busy machine)
# wall: elapsed time; cpu: this process's CPU time, which other processes cannot inflate - the latency the call would
# have on an idle machine, for one thread only (with several, it sums the threads' times)
CLOCKS = ("wall", "cpu")


# ------------------------------------------------------------------------------------------ timing
@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block (unchanged for None), restored afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_timing_options(backend: str, batch_size: int, threads: int | None, dtype: str, warmup: int,
                         repeats: int, channels_last: bool = False, statistic: str = "median",
                         clock: str = "wall") -> None:
    """Refuse impossible timing settings with one line each (before any work)."""
    if clock not in CLOCKS:
        raise ConfigError(f"unknown clock {clock!r}; choose from {', '.join(CLOCKS)}")
    if clock == "cpu" and threads != 1:
        raise ConfigError("the cpu clock measures a call's latency only with one thread (it sums the CPU time of all "
                          "threads): use threads=1, or the wall clock")
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown timing statistic {statistic!r}; choose from {', '.join(STATISTICS)}")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown latency backend {backend!r}; the backends are: {', '.join(BACKENDS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if backend == "onnxruntime" and (dtype != "fp32" or channels_last):
        raise ConfigError("the onnxruntime backend times fp32 models in their exported layout: "
                          "use dtype fp32 without channels_last")
    check_range("batch_size", batch_size, 1)
    if threads is not None:
        check_range("threads", threads, 1)
    check_range("warmup", warmup, 0)
    check_range("repeats", repeats, 1)


def _time_ms(run: Callable[[], Any], warmup: int, repeats: int, statistic: str = "median",
             clock: str = "wall") -> float:
    timer = time.perf_counter if clock == "wall" else time.process_time
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = timer()
        run()
        times.append(timer() - start)
    return (statistics.median(times) if statistic == "median" else min(times)) * 1e3


def time_module(module: nn.Module, in_shape: tuple[int, ...], *, backend: str = "torch", batch_size: int = 1,
                threads: int | None = None, dtype: str = "fp32", channels_last: bool = False, warmup: int = 5,
                repeats: int = 20, statistic: str = "median", clock: str = "wall") -> float:
    """Median (``statistic='min'``: shortest) latency in ms of ``module`` (eval mode) on a random batch.

    ``backend='torch'``: eager forward passes under ``torch.inference_mode()`` with ``threads`` intra-op threads,
    in ``dtype`` and (``channels_last``) NHWC memory format. ``backend='onnxruntime'``: the module exported with
    ``torch.onnx.export`` (opset 17) to a temporary file and run by an ``InferenceSession`` with
    ``intra_op_num_threads=threads`` (fp32). Each timed call is one batch; the median of ``repeats`` calls after
    ``warmup`` untimed ones. On a machine shared with other work, ``'min'`` is the call least disturbed by them:
    a whole network, longer than one time slice, is interrupted far more often than one of its blocks.
    ``clock='cpu'`` (one thread only) times each call by this process's CPU time instead of the wall clock: time
    spent waiting for other processes does not count.
    """
    check_timing_options(backend, batch_size, threads, dtype, warmup, repeats, channels_last, statistic, clock)
    module = module.eval()
    x = torch.randn(batch_size, *in_shape)
    if backend == "onnxruntime":
        return _time_onnxruntime(module, x, threads, warmup, repeats, statistic, clock)
    fmt = torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format
    module = module.to(dtype=DTYPES[dtype], memory_format=fmt)
    x = x.to(dtype=DTYPES[dtype], memory_format=fmt)
    with torch_threads(threads), torch.inference_mode():
        return _time_ms(lambda: module(x), warmup, repeats, statistic, clock)


def _time_onnxruntime(module: nn.Module, x: torch.Tensor, threads: int | None, warmup: int, repeats: int,
                      statistic: str, clock: str) -> float:
    import warnings

    with tempfile.TemporaryDirectory(prefix="flexbone-latency-") as tmp:
        path = os.path.join(tmp, "part.onnx")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, once per part
            torch.onnx.export(module, (x,), path, input_names=["x"], output_names=["y"], opset_version=17,
                              dynamo=False)
        return time_onnx_file(path, tuple(x.shape[1:]), batch_size=x.shape[0], threads=threads, warmup=warmup,
                              repeats=repeats, statistic=statistic, clock=clock)


def time_onnx_file(path: str | os.PathLike, in_shape: tuple[int, ...], *, batch_size: int = 1,
                   threads: int | None = None, warmup: int = 5, repeats: int = 20, statistic: str = "median",
                   clock: str = "wall") -> float:
    """Median (or ``'min'``) latency in ms of the ONNX file at ``path`` in an onnxruntime CPU session with
    ``threads`` intra-op threads (default: torch's count) and onnxruntime's other defaults, as a deployer runs it,
    on a random float32 batch of ``batch_size`` images of ``in_shape``. The session is closed before returning
    (its spinning worker threads would slow whatever this process runs next)."""
    import gc

    import onnxruntime as ort

    check_timing_options("onnxruntime", batch_size, threads, "fp32", warmup, repeats, False, statistic, clock)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: torch.randn(batch_size, *in_shape).numpy()}
    try:
        return _time_ms(lambda: session.run(None, feed), warmup, repeats, statistic, clock)
    finally:
        del session
        gc.collect()


def _where_measured(backend: str, batch_size: int, threads: int | None, dtype: str, channels_last: bool,
                    warmup: int, repeats: int, statistic: str, clock: str) -> dict[str, Any]:
    from .. import __version__
    from ..bench.throughput import cpu_name

    info: dict[str, Any] = dict(
        backend=backend, batch_size=batch_size, threads=threads or torch.get_num_threads(), dtype=dtype,
        channels_last=channels_last, warmup=warmup, repeats=repeats, statistic=statistic, clock=clock,
        device=cpu_name(),
        cpu_count=os.cpu_count(), torch_version=torch.__version__, flexbone_version=__version__,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    if backend == "onnxruntime":
        import onnxruntime

        info["onnxruntime_version"] = onnxruntime.__version__
    return info


# -------------------------------------------------------------------------------------- measured cost
class MeasuredLatency:
    """Latency (ms per batch) of ``cfg``'s extracted sub-network, timed on this machine (see :func:`time_module`).

    The supernet's active sub-network is restored after each call. ``img_size``: the input size of a space
    without resolutions (OFA-ResNet50; default its ``default_cfg``).
    """

    name, unit = "latency", "ms"

    def __init__(self, supernet: nn.Module, *, backend: str = "torch", batch_size: int = 1,
                 threads: int | None = None, dtype: str = "fp32", channels_last: bool = False, warmup: int = 5,
                 repeats: int = 20, statistic: str = "median", clock: str = "wall", img_size: int | None = None):
        check_timing_options(backend, batch_size, threads, dtype, warmup, repeats, channels_last, statistic, clock)
        self.supernet = supernet
        self.settings = dict(backend=backend, batch_size=batch_size, threads=threads, dtype=dtype,
                             channels_last=channels_last, warmup=warmup, repeats=repeats, statistic=statistic,
                             clock=clock)
        self._parts = SubnetParts(supernet, img_size=img_size)

    def __call__(self, cfg: SubnetConfig) -> float:
        cfg = self.supernet.space.validate(cfg)
        before = self.supernet.active_config
        try:
            sub = self.supernet.extract(cfg).eval()
        finally:
            self.supernet.set_active(before)
        r = self._parts.resolution(cfg)
        return time_module(sub, (self.supernet.in_chans, r, r), **self.settings)

    def __repr__(self) -> str:
        return f"MeasuredLatency({self.settings})"


# ------------------------------------------------------------------------------------------- the table
def _size_key(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


class LatencyTable:
    """Per part and input shape, its median latency (ms); a sub-network's latency is the sum over its parts.

    Build with :meth:`build` (or ``flexbone latency-table``), keep with :meth:`save` / :meth:`load`.
    ``info`` records where and how it was measured; ``resolutions`` are the input sizes it can predict.
    """

    def __init__(self, space: SearchSpace, resolutions: Iterable[int], entries: Mapping[str, Mapping[str, float]],
                 info: Mapping[str, Any], supernet: str = ""):
        self.space = space
        self.resolutions = tuple(sorted(resolutions))
        self.entries = {k: dict(v) for k, v in entries.items()}  # part key -> {"CxHxW": ms}
        self.info = dict(info)
        self.supernet_name = supernet or space.name
        self._parts: SubnetParts | None = None
        self._ms: tuple[dict, dict] | None = None  # (entries it was made from, {(key, shape): ms})

    # ------------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, supernet: nn.Module, backend: str = "torch", batch_size: int = 1, threads: int | None = None,
              resolutions: Iterable[int] | None = None, progress: bool = True, *, dtype: str = "fp32",
              channels_last: bool = False, warmup: int = 3, repeats: int = 10,
              statistic: str = "median", clock: str = "wall") -> "LatencyTable":
        """Time every part the space's sub-networks can have, at every resolution in ``resolutions`` (default
        :func:`default_resolutions`; the input size for a space without resolutions), once each."""
        check_timing_options(backend, batch_size, threads, dtype, warmup, repeats, channels_last, statistic, clock)
        resolutions = check_resolutions(supernet.space, resolutions)
        splitter = SubnetParts(supernet)
        todo = splitter.cover(resolutions)
        entries: dict[str, dict[str, float]] = {}
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="latency table", unit="part", dynamic_ncols=True)
        try:
            for part in todo:
                module = splitter.module(part.key)
                entries.setdefault(part.key, {})[_size_key(part.in_shape)] = time_module(
                    module, part.in_shape, backend=backend, batch_size=batch_size, threads=threads, dtype=dtype,
                    channels_last=channels_last, warmup=warmup, repeats=repeats, statistic=statistic, clock=clock)
                if bar is not None:
                    bar.update()
        finally:
            if bar is not None:
                bar.close()
        info = _where_measured(backend, batch_size, threads, dtype, channels_last, warmup, repeats, statistic, clock)
        info.update(parts_timed=len(todo), num_classes=supernet.num_classes, in_chans=supernet.in_chans)
        table = cls(supernet.space, resolutions, entries, info, supernet=getattr(supernet, "name", ""))
        table._parts = splitter
        return table

    # ----------------------------------------------------------------------------------- predicting
    def check_space(self, space: SearchSpace) -> None:
        """Raise ConfigError unless this table was built for ``space``."""
        mine, theirs = self.space.to_dict(), space.to_dict()
        if mine != theirs:
            differ = ", ".join(k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k))
            which = f"{self.space.name}'s space, not for {space.name}'s" if self.space.name != space.name else \
                f"another space of {space.name} than this one"
            raise ConfigError(f"this latency table was built for {which} (they differ in: {differ}); build one for it "
                              f"with `flexbone latency-table --supernet {space.name}`")

    def bind(self, supernet: nn.Module) -> "LatencyTable":
        """Use ``supernet`` to split configurations into parts (checked against the table's space)."""
        self.check_space(supernet.space)
        self._parts = SubnetParts(supernet, img_size=self.resolutions[0] if not self.space.resolution else None)
        return self

    def _splitter(self) -> SubnetParts:
        if self._parts is None:
            from ..models import create_model

            kwargs = {k: self.info[k] for k in ("num_classes", "in_chans") if k in self.info}
            with torch.device("meta"):  # only its structure is needed: no weights
                self.bind(create_model(self.supernet_name, **kwargs))
        return self._parts  # type: ignore[return-value]

    def _lookup(self) -> dict[tuple[str, tuple[int, ...]], float]:
        """``{(part key, input shape): ms}``, remade when ``entries`` is replaced."""
        if self._ms is None or self._ms[0] is not self.entries:
            self._ms = (self.entries, {(k, tuple(int(v) for v in size.split("x"))): ms
                                       for k, sizes in self.entries.items() for size, ms in sizes.items()})
        return self._ms[1]

    def predict(self, cfg: SubnetConfig) -> float:
        """The predicted latency (ms per batch) of ``cfg``: the sum of its parts' timings."""
        cfg = self.space.validate(cfg)
        splitter = self._splitter()
        r = splitter.resolution(cfg, self.resolutions[0] if not self.space.resolution else None)
        if r not in self.resolutions:
            raise ConfigError(f"this latency table has no timings at resolution {r} (it has "
                              f"{', '.join(map(str, self.resolutions))}); search within those "
                              f"(space.restrict(resolution=table.resolutions)) or build a table with --resolutions")
        ms = self._lookup()
        total = 0.0
        for key, shape, _ in splitter.chain(cfg, img_size=r):
            t = ms.get((key, shape))
            if t is None:
                raise ConfigError(f"this latency table has no timing of part {key} at {shape}: it was built for "
                                  f"another configuration of {self.supernet_name} (classes, input channels); "
                                  f"build a new one")
            total += t
        return total

    # ------------------------------------------------------------------------------------------- file
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "supernet": self.supernet_name, "space": self.space.to_dict(),
                "resolutions": list(self.resolutions), "info": self.info, "entries": self.entries}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON, atomically."""
        from ..outputs import write_json

        return write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike, supernet: nn.Module | None = None) -> "LatencyTable":
        """Read a table; with ``supernet``, refuse a table built for another space (ConfigError)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"latency table not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read latency table {path}: {e}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a flexbone latency table (format {FORMAT!r}); build one with "
                              f"`flexbone latency-table`")
        try:
            table = cls(SearchSpace.from_dict(d["space"]), d["resolutions"], d["entries"], d["info"], d["supernet"])
            table._lookup()  # every entry a {"CxHxW": ms} mapping, read now rather than mid-search
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"latency table {path} is incomplete or damaged ({type(e).__name__}: {e})") from None
        if supernet is not None:
            table.bind(supernet)
        return table

    def __repr__(self) -> str:
        i = self.info
        return (f"LatencyTable({self.supernet_name}, {len(self.entries)} parts, resolutions {list(self.resolutions)}, "
                f"{i.get('backend')} batch {i.get('batch_size')} threads {i.get('threads')} on {i.get('device')})")


class TableLatency:
    """The ``latency`` cost predicted by a :class:`LatencyTable` (ms per batch)."""

    name, unit = "latency", "ms"

    def __init__(self, table: LatencyTable):
        self.table = table

    def __call__(self, cfg: SubnetConfig) -> float:
        return self.table.predict(cfg)

    def for_genes(self, layout: GeneLayout) -> GenePricer | None:
        """The table's prediction for rows of ``layout``'s genes at once (see :class:`~.costs.GenePricer`), or
        None where the family has no slot table."""
        table = self.table
        if layout.space != table.space:
            return None
        ms = table._lookup()

        def part_ms(key: str, shape: tuple[int, int, int], macs: int) -> float:
            return ms.get((key, shape), np.inf)

        slots = table._splitter().slot_table(part_ms, table.resolutions)
        if slots is None:
            return None
        if np.isinf(slots[0]).any() or np.isinf(slots[1]).any():
            return None  # a part missing from the table: the part-by-part cost names it
        column = {r: i for i, r in enumerate(table.resolutions)}
        sizes = [column.get(r, -1) for r in layout.space.resolution] or [0]
        missing = (f"this latency table has no timings at some resolution the search may choose (it has "
                   f"{', '.join(map(str, table.resolutions))}); search within those "
                   f"(space.restrict(resolution=table.resolutions)) or build a table with --resolutions")
        return GenePricer(layout, *slots, size_of_gene=sizes, missing=missing)

    def __repr__(self) -> str:
        return f"TableLatency({self.table!r})"


# -------------------------------------------------------------------------------------- resolutions
def default_resolutions(space: SearchSpace) -> tuple[int, ...]:
    """Every resolution of the space, or 224 for a space without resolutions (see ``flexbone latency-table``)."""
    return tuple(space.resolution) or (224,)


def check_resolutions(space: SearchSpace, resolutions: Iterable[int] | None) -> tuple[int, ...]:
    """``resolutions`` (default :func:`default_resolutions`) checked against the space: one-line ConfigError."""
    if resolutions is None:
        return default_resolutions(space)
    sizes = tuple(sorted(set(int(r) for r in resolutions)))
    if not sizes:
        raise ConfigError("give at least one resolution")
    if space.resolution:
        stray = [r for r in sizes if r not in space.resolution]
        if stray:
            raise ConfigError(f"resolution {stray[0]} is not in {space.name}'s space; allowed: "
                              f"{', '.join(map(str, space.resolution))}")
    elif len(sizes) > 1:
        raise ConfigError(f"{space.name} does not search the resolution: give one input size, not "
                          f"{', '.join(map(str, sizes))}")
    if sizes[0] < 8:
        raise ConfigError(f"resolution {sizes[0]} is too small: at least 8 px")
    return sizes
