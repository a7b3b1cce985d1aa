"""Checkpoint I/O: formats, wrappers, mismatch reports, atomic writes, and refusal to run code from a file."""
import os
import pickle

import pytest
import torch

import flexbone
from flexbone.checkpoint import atomic_write, load_state_dict, read_checkpoint, save_state_dict
from flexbone.errors import CheckpointError


@pytest.fixture
def model():
    return flexbone.create_model("resnet8s_tiny", num_classes=3)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth", ".bin"])
def test_round_trip(model, tmp_path, suffix):
    path = save_state_dict(model.state_dict(), tmp_path / f"w{suffix}")
    other = flexbone.create_model("resnet8s_tiny", num_classes=3)
    assert not _same(model, other)
    assert flexbone.load_checkpoint(other, path).ok
    assert _same(model, other)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "state_dict_ema"])
def test_wrapped_and_prefixed_checkpoints(model, tmp_path, wrap):
    # a training checkpoint: weights under a key, DDP 'module.' prefix, other entries beside
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({wrap: sd, "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "ckpt.pth")
    other = flexbone.create_model("resnet8s_tiny", num_classes=3)
    key = "state_dict_ema" if wrap == "state_dict_ema" else None
    flexbone.load_checkpoint(other, tmp_path / "ckpt.pth", key=key)
    assert _same(model, other)


def test_mismatch_names_missing_unexpected_and_misshaped_keys(model, tmp_path):
    sd = model.state_dict()
    sd.pop("layer1.0.conv1.weight")
    sd["extra.weight"] = torch.zeros(1)
    sd["fc.weight"] = torch.zeros(10, 64)
    path = tmp_path / "bad.safetensors"
    save_state_dict(sd, path)
    other = flexbone.create_model("resnet8s_tiny", num_classes=3)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        flexbone.load_checkpoint(other, path)
    msg = str(err.value)
    assert "layer1.0.conv1.weight" in msg and "extra.weight" in msg and "fc.weight" in msg
    assert "(10, 64)" in msg and "(3, 64)" in msg
    # a failed load leaves the model untouched
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_non_strict_load_reports_instead_of_raising(model):
    sd = model.state_dict()
    sd.pop("fc.bias")
    report = flexbone.load_checkpoint(model, sd, strict=False)
    assert report.missing == ["fc.bias"] and not report.unexpected


class _RunsCode:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, f)
    # sanity: the file really would run code when unpickled unsafely
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        flexbone.load_checkpoint(flexbone.create_model("resnet8s_tiny"), path)
    assert not marker.exists()
    # same payload saved with torch.save (zip format)
    torch.save({"payload": _RunsCode(marker)}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(tmp_path / "evil2.pt")
    assert not marker.exists()


def test_corrupt_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_state_dict(tmp_path / "junk.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path / "junk.pth")


def test_atomic_write_keeps_the_previous_file_when_writing_fails(tmp_path):
    path = tmp_path / "w.safetensors"
    save_state_dict({"a": torch.ones(3)}, path)

    def crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt  # killed mid-save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert torch.equal(load_state_dict(path)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary left behind


def test_tied_weights_save_to_safetensors(tmp_path):
    w = torch.randn(4, 4)
    sd = {"a": w, "b": w, "c": w.t()}  # shared storage and a non-contiguous view
    save_state_dict(sd, tmp_path / "t.safetensors")
    back = load_state_dict(tmp_path / "t.safetensors")
    assert all(torch.equal(back[k], sd[k]) for k in sd)
