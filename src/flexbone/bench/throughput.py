"""Throughput, latency and memory of models, measured side by side.

How a measurement works (:func:`measure`):

1. Every model is prepared with the same settings (device, dtype, memory format, ``torch.compile``) and
   gets the same input batch.
2. Each model runs ``warmup`` untimed steps (this is also when ``torch.compile`` compiles).
3. One extra untimed step per model measures memory (below).
4. ``repeats`` timed rounds follow. A round runs one step of every model, in an order that changes from
   round to round (:func:`round_order`: A B, B A, B A, A B, ...), so that a slow phase of a shared machine
   (another process, thermal throttling) hits all models alike instead of the one that happened to be
   measured during it, and no model always runs right after the same one. On CUDA each step
   is bracketed by ``torch.cuda.synchronize()``.

With a reference implementation (:func:`benchmark` with ``compare='timm'``), the reference's weights are
copied into flexbone's model when the names and shapes agree (``same_weights``), so both compute the same
numbers on the same input.

A *step* is one batch: ``infer`` = a forward pass under ``torch.no_grad()``; ``train`` = forward,
cross-entropy loss against random labels, backward and the SGD step ``flexbone train`` takes by default
(momentum 0.9, weight decay 1e-4 except on norms and biases, torch's fused kernel where it has one).

Reported per model: latency per batch (p50, p90, mean, in ms), throughput = batch size / p50 latency
(images/s; the median resists the outliers of a shared machine), and memory:

* ``step_mem_mb``: the peak memory one step adds on top of what was allocated before it (activations,
  workspaces, gradients). CUDA: ``torch.cuda.max_memory_allocated()`` after
  ``reset_peak_memory_stats()``, minus ``memory_allocated()`` before the step. CPU: the rise of the
  process's peak resident set size over its resident size before the step; Linux lets a process reset
  its peak (``echo 5 > /proc/self/clear_refs``) and read it (``VmHWM`` in ``/proc/self/status``), so no
  psutil is needed. Where the reset is not possible, ``getrusage``'s lifetime peak is used, which only
  sees a step that sets a new lifetime peak (``mem_method`` says which). CPU numbers include the
  allocator's behaviour and are approximate.
* ``weights_mb``: parameters and buffers of the model in the dtype it runs in.

dtypes: for ``infer``, ``bf16``/``fp16`` cast the model and input (pure low precision); for ``train``
they enable ``torch.autocast`` (mixed precision, fp32 master weights; fp16 adds a gradient scaler).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config.schema import OptimConfig
from ..cpu_memory import current_policy
from ..errors import ConfigError, FlexboneError
from ..train.optim import create_optimizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("infer", "train")


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class BenchSettings:
    """What to measure and how. :meth:`validate` turns impossible combinations into one-line errors."""

    mode: str = "infer"  # infer | train
    batch_size: int = 32
    img_size: int = 224  # square input, pixels
    in_chans: int = 3
    num_classes: int = 1000
    device: str = "cpu"  # cpu | cuda | cuda:N
    dtype: str = "fp32"  # fp32 | bf16 | fp16
    channels_last: bool = False
    compile: bool = False  # torch.compile the model (default mode)
    warmup: int = 3  # untimed steps per model
    repeats: int = 10  # timed steps per model (one per interleaved round)
    threads: int | None = None  # torch intra-op threads; None = leave torch's setting
    lr: float = 1e-3  # SGD learning rate of the train step (any value times the same)

    def validate(self) -> "BenchSettings":
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        for name in ("batch_size", "img_size", "in_chans", "num_classes", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be 0 or more, not {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, not {self.threads}")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ConfigError(f"--device must be cpu or cuda, not {self.device!r}") from None
        if device.type not in ("cpu", "cuda"):
            raise ConfigError(f"--device must be cpu or cuda, not {self.device!r}")
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu)")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise ConfigError(f"--device {self.device}: only {torch.cuda.device_count()} CUDA device(s)")
        if device.type == "cpu" and self.dtype == "fp16":
            raise ConfigError("--dtype fp16 is not supported on the CPU (use fp32 or bf16)")
        return self

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


# ------------------------------------------------------------------------------------------- results
@dataclass
class BenchResult:
    """One model measured under one setting. Fields are flat so that a list of them is a CSV table."""

    model: str
    impl: str  # flexbone | timm
    mode: str
    throughput: float  # images / s, from the p50 latency
    latency_p50_ms: float  # per batch
    latency_p90_ms: float
    latency_mean_ms: float
    step_mem_mb: float | None
    mem_method: str
    weights_mb: float
    params: int
    batch_size: int
    img_size: int
    device: str
    device_name: str
    dtype: str
    channels_last: bool
    compile: bool
    warmup: int
    repeats: int
    threads: int
    torch_version: str
    same_weights: bool | None = None  # with a reference: were its weights copied into ours?
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, with_latencies: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_latencies:
            d.pop("latencies_ms")
        return d


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({os.cpu_count()} logical cores)"


def source_revision() -> str | None:
    """The git commit of the flexbone source tree this process runs (``+modified`` when tracked files differ from
    it), or None when flexbone is not imported from a git checkout's ``src/flexbone`` (e.g. an installed wheel)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", package, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if os.path.realpath(os.path.join(top, "src", "flexbone")) != os.path.realpath(package):
            return None  # flexbone installed inside some other repository (a virtual environment in a checkout)
        commit = git("rev-parse", "--short=12", "HEAD")
        return commit + ("+modified" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str = "cpu") -> dict[str, Any]:
    """Where a measurement ran: versions (and the source revision, in a git checkout), device, threads."""
    from .. import __version__

    env = {
        "flexbone_version": __version__,
        "flexbone_revision": source_revision(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_memory": current_policy(),  # this process's (see flexbone.cpu_memory)
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
    }
    if torch.device(device).type == "cuda":
        env["cuda_version"] = torch.version.cuda
    try:  # the reference's version, when installed (read from its metadata: timm is not imported)
        env["timm_version"] = importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        pass
    return env


# -------------------------------------------------------------------------------------------- memory
def proc_status_kb(key: str) -> int | None:
    """A ``/proc/self/status`` field in kB (``"VmRSS"``, ``"VmHWM"``: resident and peak resident memory), or None
    where there is no such file (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # "VmHWM:   123456 kB"
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _measure_step_memory(step: Callable[[], None], device: torch.device) -> tuple[float | None, str]:
    """Peak bytes (in MB) that one call of ``step`` adds to what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "cuda_max_memory_allocated"
    if _reset_peak_rss():
        before = proc_status_kb("VmRSS")
        step()
        peak = proc_status_kb("VmHWM")
        if before is not None and peak is not None:
            return max(peak - before, 0) / 1024, "cpu_peak_rss_delta"
    import resource  # Unix only; reached only where /proc/self/clear_refs is missing

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, lifetime peak
    step()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) / 1024, "cpu_lifetime_maxrss_delta"


# -------------------------------------------------------------------------------------------- runner
@dataclass
class Runner:
    """A prepared model: ``step()`` runs one batch."""

    model_name: str
    impl: str
    model: nn.Module
    step: Callable[[], None]
    params: int
    weights_mb: float
    same_weights: bool | None = None
    latencies_s: list[float] = field(default_factory=list)
    step_mem_mb: float | None = None
    mem_method: str = ""


def make_input(settings: BenchSettings, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch all models see: images ``(B, C, H, W)`` and labels ``(B,)`` (train mode), seeded."""
    g = torch.Generator().manual_seed(seed)
    s = settings
    x = torch.randn(s.batch_size, s.in_chans, s.img_size, s.img_size, generator=g)
    y = torch.randint(0, s.num_classes, (s.batch_size,), generator=g)
    device = torch.device(s.device)
    x = x.to(device)
    if s.mode == "infer":
        x = x.to(s.torch_dtype)
    if s.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device)


def prepare(model: nn.Module, settings: BenchSettings, inputs: tuple[torch.Tensor, torch.Tensor],
            model_name: str = "", impl: str = "flexbone", same_weights: bool | None = None) -> Runner:
    """Move ``model`` to the settings' device / dtype / memory format and build its step function."""
    s = settings
    device = torch.device(s.device)
    params = sum(p.numel() for p in model.parameters())
    model = model.to(device)
    if s.mode == "infer":
        model = model.to(s.torch_dtype)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weights_mb = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**20
    x, y = inputs
    fn = torch.compile(model) if s.compile else model

    if s.mode == "infer":
        model.eval()

        def step() -> None:
            with torch.no_grad():
                fn(x)
    else:
        model.train()
        optimizer = create_optimizer(model, OptimConfig(name="sgd", lr=s.lr, momentum=0.9))  # as `flexbone train`
        low_precision = s.dtype != "fp32"
        autocast = (lambda: torch.autocast(device.type, dtype=s.torch_dtype)) if low_precision \
            else contextlib.nullcontext
        scaler = torch.amp.GradScaler(device.type) if (s.dtype == "fp16" and device.type == "cuda") else None

        def step() -> None:
            with autocast():
                logits = fn(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()

    return Runner(model_name or type(model).__name__, impl, model, step, params, weights_mb, same_weights)


def round_order(items: Sequence[Any], i: int) -> list[Any]:
    """The order of round ``i``: rotation ``i // 2`` of ``items``, reversed in odd rounds.

    Two models run A B, B A, B A, A B, ...; with more models each takes every position in turn and follows a
    different model from round to round. The predecessor matters on a CPU: which tensors the allocator has
    just freed decides whether a step reuses warm memory or faults in fresh pages, so no model should always
    run after the same one.
    """
    k = (i // 2) % max(len(items), 1)
    order = list(items[k:]) + list(items[:k])
    return order if i % 2 == 0 else order[::-1]


def run_in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new (spawned) interpreter, its result sent back: no process's memory layout, allocator
    state or warmed-up caches carry over from one measurement to the next. ``fn`` must be importable (module
    level) and its arguments and result picklable."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def measure(runners: Sequence[Runner], settings: BenchSettings,
            progress: Callable[[str], None] | None = None) -> list[BenchResult]:
    """Warm up, measure memory, then time ``settings.repeats`` interleaved rounds of all ``runners``."""
    s = settings
    device = torch.device(s.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    say = progress or (lambda msg: None)

    for r in runners:
        say(f"warm-up {r.impl} {r.model_name} ({s.warmup} steps{', compiling' if s.compile else ''})")
        for _ in range(s.warmup):
            r.step()
        sync()
        r.step_mem_mb, r.mem_method = _measure_step_memory(r.step, device)
        r.latencies_s = []

    say(f"timing {len(runners)} model(s), {s.repeats} interleaved rounds")
    for i in range(s.repeats):
        order = round_order(runners, i)
        for r in order:
            sync()
            t0 = time.perf_counter()
            r.step()
            sync()
            r.latencies_s.append(time.perf_counter() - t0)

    name = device_name(device)
    results = []
    for r in runners:
        lat_ms = np.asarray(r.latencies_s) * 1e3
        p50 = float(np.percentile(lat_ms, 50))
        results.append(BenchResult(
            model=r.model_name, impl=r.impl, mode=s.mode,
            throughput=s.batch_size / (p50 / 1e3),
            latency_p50_ms=p50, latency_p90_ms=float(np.percentile(lat_ms, 90)),
            latency_mean_ms=float(lat_ms.mean()),
            step_mem_mb=r.step_mem_mb, mem_method=r.mem_method, weights_mb=r.weights_mb, params=r.params,
            batch_size=s.batch_size, img_size=s.img_size, device=str(device), device_name=name,
            dtype=s.dtype, channels_last=s.channels_last, compile=s.compile, warmup=s.warmup,
            repeats=s.repeats, threads=torch.get_num_threads(), torch_version=torch.__version__,
            same_weights=r.same_weights, latencies_ms=[float(v) for v in lat_ms],
        ))
    return results


# ------------------------------------------------------------------------------------ whole benchmark
def _reference_package(impl: str):
    """The reference implementation's package (timm is imported only here, on demand)."""
    if impl != "timm":
        raise ConfigError(f"--compare must be 'timm', not {impl!r}")
    try:
        import timm
    except ImportError:
        raise FlexboneError("--compare timm needs the timm package: pip install timm "
                            "(flexbone itself never needs it)") from None
    return timm


def check_reference_models(impl: str, model_names: Sequence[str]) -> None:
    """Fail before anything is built when the reference lacks one of ``model_names``."""
    timm = _reference_package(impl)
    missing = [n for n in model_names if not timm.is_model(n)]
    if missing:
        raise FlexboneError(f"--compare {impl}: {impl} has no model named {', '.join(map(repr, missing))}")


def create_reference_model(impl: str, model_name: str, settings: BenchSettings) -> nn.Module:
    """The reference implementation's model of the same name, with the same classes and input channels."""
    check_reference_models(impl, [model_name])
    return _reference_package(impl).create_model(model_name, pretrained=False, num_classes=settings.num_classes,
                                                 in_chans=settings.in_chans)


def _copy_weights(src: nn.Module, dst: nn.Module) -> bool:
    """Give ``dst`` the weights of ``src`` when the names and shapes agree: both then compute the same
    numbers (no run gets lucky or unlucky with denormals or zero-initialised layers)."""
    try:
        dst.load_state_dict(src.state_dict(), strict=True)
        return True
    except RuntimeError:
        return False


def benchmark(model_names: Sequence[str], settings: BenchSettings, compare: str | None = None,
              progress: Callable[[str], None] | None = None, **model_kwargs: Any) -> list[BenchResult]:
    """Measure the registered models ``model_names`` (and, with ``compare='timm'``, timm's models of the
    same names) side by side, interleaved, under ``settings``. Returns one result per model and impl."""
    from ..models import create_model

    s = settings.validate()
    if compare:
        check_reference_models(compare, model_names)
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    say = progress or (lambda msg: None)
    inputs = make_input(s)
    runners = []
    for name in model_names:
        torch.manual_seed(0)
        ours = create_model(name, num_classes=s.num_classes, in_chans=s.in_chans, **model_kwargs)
        same = None
        if compare:
            ref = create_reference_model(compare, name, s)
            same = _copy_weights(ref, ours)
        say(f"built {name}" + (f" (flexbone and {compare})" if compare else ""))
        runners.append(prepare(ours, s, inputs, name, "flexbone", same))
        if compare:
            runners.append(prepare(ref, s, inputs, name, compare, same))
    return measure(runners, s, progress)


def ratios(results: Sequence[BenchResult], reference: str = "timm") -> list[dict[str, Any]]:
    """Throughput of flexbone / throughput of ``reference`` for every model measured with both (>1 = faster)."""
    out = []
    for ours in (r for r in results if r.impl == "flexbone"):
        for ref in results:
            if ref.impl == reference and ref.model == ours.model and ref.mode == ours.mode:
                out.append(dict(model=ours.model, mode=ours.mode, reference=reference,
                                ratio=ours.throughput / ref.throughput,
                                flexbone_img_s=ours.throughput, reference_img_s=ref.throughput))
    return out
