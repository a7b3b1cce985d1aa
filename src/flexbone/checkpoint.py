"""Reading and writing weights, safely.

* Reading never runs code from the file: ``.safetensors`` holds only tensors, and ``.pt/.pth/.bin``
  files are opened with ``torch.load(weights_only=True)``, which refuses anything but tensors and
  plain containers.
* Writing is atomic: the data goes to a temporary file in the same folder, is flushed to disk, then
  renamed over the target. A crash mid-write leaves the previous file intact.

timm and torchvision checkpoints of the ResNet family use the same parameter names as flexbone's
models and load as they are; a checkpoint that wraps its state dict under a key (``state_dict``,
``model``, ``state_dict_ema`` ...) or that was saved from DDP / ``torch.compile`` (``module.`` /
``_orig_mod.`` prefixes) is unwrapped.
"""
from __future__ import annotations

import errno
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from .errors import CheckpointError

# keys under which training scripts commonly nest the model weights, most specific first
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "network")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")


# --------------------------------------------------------------------------------------- writing
def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the finished file onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the mode an ordinary open() would
    try:
        try:
            write(tmp)
        except Exception as e:
            # torch.save reports a full disk as a RuntimeError of its C++ stream, without errno: say what it is
            if not isinstance(e, OSError) and _free_bytes(path.parent) == 0:
                raise OSError(errno.ENOSPC, f"No space left on device (writing {path.name}: {e})") from e
            raise
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors as ``.safetensors`` (or with ``torch.save`` for other suffixes), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        return atomic_write(path, lambda tmp: torch.save(dict(state_dict), tmp))
    # safetensors stores each tensor once: copy views that share memory (tied weights) and make all contiguous
    seen: set[tuple[int, int]] = set()
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        key = (v.untyped_storage().data_ptr(), v.untyped_storage().nbytes())
        tensors[k] = v.clone().contiguous() if key in seen or not v.is_contiguous() else v
        seen.add(key)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


# --------------------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> Any:
    """The raw object in a checkpoint file (a dict), read without executing code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of a plain pickle before refusing it: the refusal says enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects other than tensors, and loading them could "
            f"run code from the file ({_refusal_detail(e)}). Re-save the weights as a plain state dict or "
            f".safetensors."
        ) from None
    except Exception as e:  # noqa: BLE001 - a corrupt file makes torch's readers fail in many ways (IndexError...)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {reason})") from None


def _refusal_detail(e: Exception) -> str:
    """What torch's weights-only unpickler found, without its advice to retry with ``weights_only=False``
    (which would run the file's code: flexbone never points a user there)."""
    keep = []
    for line in str(e).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if not line or "weights_only" in line or line.startswith(("Please file an issue", "Check the documentation")):
            continue
        keep.append(line)
    return " ".join(keep) or type(e).__name__


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, key: str | None = None) -> dict[str, torch.Tensor]:
    """Find the state dict in a checkpoint object: ``obj[key]`` if given, else the first wrapper key."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            have = ", ".join(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"checkpoint has no entry {key!r} (it has: {have})")
        obj = obj[key]
    elif not _is_state_dict(obj) and isinstance(obj, Mapping):
        for k in WRAPPER_KEYS:
            if k in obj and _is_state_dict(obj[k]):
                obj = obj[k]
                break
    if not _is_state_dict(obj):
        raise CheckpointError("no state dict found in the checkpoint (expected a mapping of names to tensors)")
    state = {}
    for k, v in obj.items():
        for prefix in STRIPPED_PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        state[k] = v
    return state


def load_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict stored in ``path`` (unwrapped, prefixes stripped), on the CPU."""
    return extract_state_dict(read_checkpoint(path), key)


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a model."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, checkpoint shape, model shape)
    skipped: list[str] = field(default_factory=list)  # deliberately not loaded (e.g. a classifier of another size)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        def fmt(items: list) -> str:
            shown = ", ".join(map(str, items[:limit]))
            return shown + (f" ... (+{len(items) - limit} more)" if len(items) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing keys: {fmt(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected keys: {fmt(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} mis-shaped keys: {fmt(shapes)}")
        return "; ".join(parts) if parts else "all keys matched"


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """Fit a first-conv weight trained on RGB to ``in_chans`` inputs (sum for 1, tile and rescale otherwise)."""
    out_c, src_c, kh, kw = weight.shape
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // src_c)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (src_c / in_chans)


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike | Mapping[str, torch.Tensor],
    strict: bool = True,
    key: str | None = None,
    skip_mismatched_classifier: bool = False,
    adapt_first_conv: bool = False,
) -> LoadReport:
    """Load weights from ``path`` (``.safetensors``, ``.pt``, ``.pth``, ``.bin``) or a state dict into ``model``.

    With ``strict=True`` any missing, unexpected or mis-shaped key raises :class:`CheckpointError`
    naming them, and the model is left untouched. ``skip_mismatched_classifier`` leaves a classifier of
    another size at its initialisation (fine-tuning to new classes); ``adapt_first_conv`` fits an RGB stem
    to the model's input channels. Both need the model's ``default_cfg`` (flexbone models have one).
    """
    state = dict(path) if isinstance(path, Mapping) else load_state_dict(path, key)
    state, report = match_state_dict(model, state, skip_mismatched_classifier, adapt_first_conv)
    if report.mismatched or (strict and not report.ok):
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__}: {report.describe()}")
    model.load_state_dict(state, strict=False)
    return report


def match_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], skip_mismatched_classifier: bool = False,
                     adapt_first_conv: bool = False) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """``(the entries of state that model would load, what does not fit)``, as :func:`load_checkpoint` sees them.

    Nothing is loaded, so ``model`` may live on the ``meta`` device: a checkpoint can be checked against a model
    before any work (``flexbone compare --pretrained``) without allocating its weights.
    """
    state = dict(state)
    if hasattr(model, "_convert_checkpoint"):
        state = model._convert_checkpoint(state)
    own = model.state_dict()
    report = LoadReport()
    cfg = getattr(model, "default_cfg", {})
    first_conv = f"{cfg.get('first_conv')}.weight"
    # the classifier's key prefixes ('head.'; a distilled DeiT's cfg names two heads, as timm's: a tuple)
    classifier = cfg.get("classifier")
    heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier or ()))
    if adapt_first_conv and first_conv in state and first_conv in own:
        want, have = own[first_conv].shape, state[first_conv].shape
        if want[1] != have[1] and want[0] == have[0]:
            state[first_conv] = adapt_input_conv(want[1], state[first_conv])
    for k in list(state):
        if k in own and state[k].shape != own[k].shape:
            if skip_mismatched_classifier and heads and k.startswith(heads):
                report.skipped.append(k)
                del state[k]
            else:
                report.mismatched.append((k, tuple(state[k].shape), tuple(own[k].shape)))
    if skip_mismatched_classifier and heads:
        # a classifier removed by num_classes=0 leaves its checkpoint keys without a home
        for k in list(state):
            if k.startswith(heads) and k not in own:
                report.skipped.append(k)
                del state[k]
    report.missing = [k for k in own if k not in state and k not in report.skipped
                      and not any(m[0] == k for m in report.mismatched)]
    report.unexpected = [k for k in state if k not in own]
    return state, report
