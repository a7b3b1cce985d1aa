"""Faults and bad input, command by command: every failure a clean one.

Each case runs the command line in-process (``flexbone.cli.main``) and asserts what a user sees and keeps:
one ``flexbone: error:`` line (or the interrupt lines), a non-zero exit, no traceback, and nothing that
existed before changed (the folder is snapshotted byte for byte before and compared after).

Unwritable outputs: root ignores permission bits, so a folder is made unwritable by putting a regular
file where a folder must be, by a read-only tmpfs (where this process may mount), or by an injected
``PermissionError``. A full disk: a 64 KiB tmpfs where mounting is allowed, and everywhere an injected
``ENOSPC`` at the writer.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flexbone.checkpoint import save_state_dict
from flexbone.cli import main
from flexbone.models import create_model

pytestmark = pytest.mark.cli

TINY = ["--data.img_size", "8", "--data.test_img_size", "8", "--data.batch_size", "32", "--schedule.epochs", "2",
        "--train.max_steps_per_epoch", "2", "--no-progress", "--threads", "1"]


# ----------------------------------------------------------------------------------------- helpers
def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fails_cleanly(capsys, argv: list[str], *fragments: str, status: int = 2) -> str:
    """Run ``flexbone ARGV``; assert one error line holding every fragment, the exit status, no traceback."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's errors exit from inside main() (status 2, one line too)
        rc = e.code
    err = capsys.readouterr().err
    assert rc == status, (rc, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("flexbone: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def blocker(tmp_path) -> Path:
    """A regular file where a folder would have to be: nothing can be written under it, even by root."""
    f = tmp_path / "not_a_folder"
    f.write_text("user data\n")
    return f


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_state_dict(create_model("resnet8s_tiny", num_classes=10).state_dict(), path)
    return path


def _mount_tmpfs(path: Path, options: str) -> bool:
    if os.geteuid() != 0 or sys.platform != "linux":
        return False
    path.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs, mostly filled (skipped where this process may not mount: see the ENOSPC tests)."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "size=64k"):
        pytest.skip("cannot mount a tmpfs here; the injected-ENOSPC tests cover the same paths")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # lazy: a writer that failed may hold a file


@pytest.fixture
def read_only(tmp_path):
    mnt = tmp_path / "ro"
    if not _mount_tmpfs(mnt, "ro,size=64k"):
        pytest.skip("cannot mount a tmpfs here; the injected-PermissionError tests cover the same paths")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # lazy: a writer that failed may hold a file


# ------------------------------------------------------------------------------ out-of-range options
@pytest.mark.parametrize("argv, fragment", [
    (["validate", "--checkpoint", "x", "--data", "digits", "--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
    (["validate", "--checkpoint", "x", "--data", "digits", "--batch-size", "-1"], ">= 1, got -1"),
    (["validate", "--checkpoint", "x", "--data", "digits", "--img-size", "0"], "--img-size: must be an integer >= 1"),
    (["validate", "--checkpoint", "x", "--data", "digits", "--crop-pct", "0"], "--crop-pct: must be a number in (0, 1]"),
    (["validate", "--checkpoint", "x", "--data", "digits", "--workers", "-2"], "--workers: must be an integer >= 0"),
    (["predict", "--checkpoint", "x", "a.png", "--crop-pct", "1.5"], "in (0, 1], got 1.5"),
    (["predict", "--checkpoint", "x", "a.png", "--topk", "0"], "--topk: must be an integer >= 1"),
    (["predict", "--checkpoint", "x", "a.png", "--img-size", "-8"], "--img-size: must be an integer >= 1"),
    (["bench", "resnet18", "--repeats", "0"], "--repeats: must be an integer >= 1"),
    (["bench", "resnet18", "--threads", "0"], "--threads: must be an integer >= 1"),
    (["info", "resnet18", "--img-size", "0"], "--img-size: must be an integer >= 1"),
    (["list", "--img-size", "x"], "must be an integer >= 1, got 'x'"),
    (["subnets", "--checkpoint", "x", "--data", "digits", "--n", "0"], "--n: must be an integer >= 1"),
    (["subnets", "--checkpoint", "x", "--data", "digits", "--bn-batches", "-1"], "--bn-batches: must be"),
    (["train", "--recipe", "quickstart", "--threads", "0"], "--threads: must be an integer >= 1"),
    (["demo", "--threads", "-1"], "--threads: must be an integer >= 1"),
    (["train", "--recipe", "quickstart", "--data.batch_size", "0"], "data.batch_size must be positive"),
    (["train", "--recipe", "quickstart", "--model.drop_path_rate", "2.0"], "model.drop_path_rate must be in [0, 1)"),
])
def test_out_of_range_options_fail_in_one_line(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    fails_cleanly(capsys, argv, fragment)
    assert list(tmp_path.iterdir()) == []  # nothing written, no run folder


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(num_classes=-1), "num_classes must be an integer >= 0, got -1"),
    (dict(num_classes=2.5), "num_classes must be an integer >= 0"),
    (dict(drop_path_rate=2.0), "drop_path_rate must be a number in [0, 1], got 2.0"),
    (dict(drop_rate=-0.1), "drop_rate must be a number in [0, 1]"),
    (dict(in_chans=0), "in_chans must be an integer >= 1"),
])
def test_model_arguments_are_checked(kwargs, fragment):
    from flexbone.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        create_model("resnet18", **kwargs)
    assert fragment in str(info.value)


# ----------------------------------------------------------------------------------- unwritable outputs
def test_train_into_an_unwritable_place_fails_first(capsys, blocker):
    before = snapshot(blocker.parent)
    fails_cleanly(capsys, ["train", "--recipe", "quickstart", *TINY, "--train.output_dir", str(blocker / "runs")],
                  "cannot write the folder", "is not a folder")
    assert snapshot(blocker.parent) == before


def test_train_refused_by_the_os_fails_first(capsys, tmp_path, monkeypatch):
    from flexbone import outputs

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)
    fails_cleanly(capsys, ["train", "--recipe", "quickstart", *TINY, "--train.output_dir", str(tmp_path / "runs")],
                  "is not writable (permission denied)")
    assert list(tmp_path.iterdir()) == []


def test_train_on_a_read_only_file_system(capsys, read_only):
    fails_cleanly(capsys, ["train", "--recipe", "quickstart", *TINY, "--train.output_dir", str(read_only / "runs")],
                  "is not writable (read-only file system)")


@pytest.mark.parametrize("command", [
    ["subnets", "--checkpoint", "missing.pt", "--data", "digits", "--out", "{blocked}/s.csv"],
    ["bench", "resnet18", "--out", "{blocked}/r.json"],
])
def test_commands_check_their_output_before_any_work(capsys, blocker, command):
    before = snapshot(blocker.parent)
    argv = [a.replace("{blocked}", str(blocker)) for a in command]
    t0 = time.perf_counter()
    fails_cleanly(capsys, argv, "cannot write the file", "is not a folder")
    assert time.perf_counter() - t0 < 5  # refused at once: no model built, nothing measured
    assert snapshot(blocker.parent) == before


# ------------------------------------------------------------------------------------- failed runs
@pytest.mark.parametrize("extra, fragment", [
    (["--model", "resnet_nonexistent"], "unknown model"),
    (["--data", "{tmp}/no_such_folder"], "is not a folder"),
    (["--data", "{tmp}/empty"], "has no 'train' folder"),
])
def test_failed_train_leaves_no_run_folder(capsys, tmp_path, extra, fragment):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "runs"
    argv = ["train", "--recipe", "quickstart", *TINY, "--train.output_dir", str(out),
            *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    if "--data" in extra:
        argv += ["--data.dataset", "imagefolder"]
    fails_cleanly(capsys, argv, fragment)
    assert not out.exists()


def test_data_digits_means_the_same_in_train(capsys, tmp_path):
    """`--data digits` selects the digits in train as in validate and subnets (a recipe made for folders)."""
    from importlib.resources import files

    text = files("flexbone").joinpath("recipes", "quickstart.yaml").read_text()
    recipe = tmp_path / "folders.yaml"
    recipe.write_text(text.replace("dataset: digits", "dataset: imagefolder"))
    assert "dataset: imagefolder" in recipe.read_text()
    out = tmp_path / "runs"
    assert main(["train", "--recipe", str(recipe), "--data", "digits", *TINY, "--train.output_dir", str(out),
                 "--train.run_name", "r"]) == 0
    assert "on digits (" in capsys.readouterr().out
    assert "dataset: digits" in (out / "r" / "recipe.yaml").read_text()


# -------------------------------------------------------------------------------------- full disk
def _fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s file system up to ``leave`` bytes."""
    st = os.statvfs(folder)
    (folder / "ballast").write_bytes(b"\0" * max(st.f_bavail * st.f_frsize - leave, 0))


def test_write_json_on_a_full_tmpfs_keeps_the_old_file(full_disk):
    from flexbone.outputs import is_disk_full, write_json

    target = full_disk / "summary.json"
    write_json(target, {"epoch": 1})
    _fill(full_disk, leave=0)
    with pytest.raises(OSError) as info:
        write_json(target, {"epoch": 2, "rows": list(range(5000))})
    assert is_disk_full(info.value)
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert sorted(p.name for p in full_disk.iterdir()) == ["ballast", "summary.json"]


def test_train_when_the_disk_fills_says_what_is_intact(capsys, tmp_path, monkeypatch):
    """The second epoch's checkpoint cannot be written (ENOSPC at the writer): the first one stays whole."""
    from flexbone.train import engine

    real, calls = engine.save_training_state, []

    def save(path, state):
        calls.append(path)
        if state["epoch"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, state)

    monkeypatch.setattr(engine, "save_training_state", save)
    run = tmp_path / "runs" / "r"
    line = fails_cleanly(capsys, ["train", "--recipe", "quickstart", *TINY, "--train.output_dir",
                                  str(tmp_path / "runs"), "--train.run_name", "r"],
                         f"cannot write to {run}: the disk is full", "keeps checkpoint-last.pt",
                         f"flexbone train --resume {run}")
    assert line
    state = torch.load(run / "checkpoint-last.pt", weights_only=True)
    assert state["epoch"] == 1  # the last good checkpoint, whole
    assert not list(run.glob(".*.tmp"))  # no half-written temporary file
    assert not (run / ".lock").exists()


def test_train_on_a_full_tmpfs(capsys, full_disk):
    _fill(full_disk, leave=32 * 1024)  # room for the recipe and logs, not for a checkpoint of 0.7 MB
    fails_cleanly(capsys, ["train", "--recipe", "quickstart", *TINY, "--train.output_dir", str(full_disk / "runs"),
                           "--train.run_name", "r"], "the disk is full", "nothing was kept")
    assert sorted(p.name for p in full_disk.iterdir()) == ["ballast", "runs"]
    assert list((full_disk / "runs").iterdir()) == []  # the run folder it made is gone again


# ------------------------------------------------------------------------------------- interrupts
def _interrupt_at_epoch(monkeypatch, epoch: int) -> None:
    from flexbone.train import engine

    real = engine.train_one_epoch

    def train_one_epoch(*a, **k):
        if k["epoch"] == epoch:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine, "train_one_epoch", train_one_epoch)


def test_interrupted_train_names_the_folder_and_the_resume_command(capsys, tmp_path, monkeypatch):
    _interrupt_at_epoch(monkeypatch, 1)
    run = tmp_path / "r"
    assert main(["train", "--recipe", "quickstart", *TINY, "--train.output_dir", str(tmp_path),
                 "--train.run_name", "r"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-2:] == [
        "flexbone: interrupted",
        f"flexbone: run folder {run} keeps checkpoint-last.pt; continue with: flexbone train --resume {run}"]
    assert torch.load(run / "checkpoint-last.pt", weights_only=True)["epoch"] == 1
    assert not (run / ".lock").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--no-progress", "--threads", "1"]) == 0  # and it does continue


def test_train_interrupted_before_its_first_checkpoint_leaves_nothing(capsys, tmp_path, monkeypatch):
    _interrupt_at_epoch(monkeypatch, 0)
    assert main(["train", "--recipe", "quickstart", *TINY, "--train.output_dir", str(tmp_path),
                 "--train.run_name", "r"]) == 130
    err = capsys.readouterr().err
    assert "flexbone: nothing was kept: the run stopped before its first checkpoint" in err
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------- concurrent runs
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--recipe", "quickstart", *TINY, "--train.output_dir", str(out),
                 "--train.run_name", "r"]) == 0
    return out / "r"


def _lock(run: Path, pid: int) -> None:
    import socket

    (run / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": time.time()}))


def test_resume_of_a_run_that_another_process_trains_is_refused(capsys, finished_run):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(finished_run, other.pid)
        before = snapshot(finished_run)
        fails_cleanly(capsys, ["train", "--resume", str(finished_run), "--no-progress"],
                      f"is in use by process {other.pid}", "wait for it to finish")
        assert snapshot(finished_run) == before  # the lock and everything else untouched
    finally:
        other.kill()
        other.wait()
        (finished_run / ".lock").unlink(missing_ok=True)


def test_a_stale_lock_of_a_killed_run_is_taken_over(capsys, finished_run):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid no longer runs
    _lock(finished_run, gone.pid)
    assert main(["train", "--resume", str(finished_run), "--no-progress", "--threads", "1"]) == 0
    assert f"took over the lock of process {gone.pid}, which no longer runs" in capsys.readouterr().out
    assert not (finished_run / ".lock").exists()


@contextlib.contextmanager
def _training_process(out):
    """A `flexbone train` process (run folder ``out/r``) that cannot finish on its own, however slow the machine (200
    epochs of the tiny run once finished first on a loaded CI machine); yields it once its first checkpoint exists,
    and kills it on the way out if it still runs."""
    long_run = [a if a != "2" or TINY[i - 1] != "--schedule.epochs" else "100000" for i, a in enumerate(TINY)]
    proc = subprocess.Popen([sys.executable, "-m", "flexbone", "train", "--recipe", "quickstart", *long_run,
                             "--train.output_dir", str(out), "--train.run_name", "r"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            # Ctrl-C's default, even where this test runs with SIGINT ignored (a job started in the
                            # background, under nohup): a child would inherit that and never see a SIGINT
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while not (out / "r" / "checkpoint-last.pt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert (out / "r" / "checkpoint-last.pt").exists(), proc.stderr.read() if proc.poll() is not None else ""
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_two_real_processes_one_run_folder(tmp_path):
    """A training process holds its folder; a second --resume of it, started meanwhile, is refused."""
    run = tmp_path / "runs" / "r"
    with _training_process(tmp_path / "runs") as first:
        second = subprocess.run([sys.executable, "-m", "flexbone", "train", "--resume", str(run), "--no-progress"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is in use by process {first.pid}" in second.stderr
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 130 and f"continue with: flexbone train --resume {run}" in err
        assert not (run / ".lock").exists()


@pytest.mark.slow
def test_sigterm_ends_a_run_as_ctrl_c_does(tmp_path):
    """`kill` (SIGTERM) of a training process: the same cleanup and note as Ctrl-C, exit 143, the lock released
    and the checkpoint kept."""
    run = tmp_path / "runs" / "r"
    with _training_process(tmp_path / "runs") as proc:
        proc.terminate()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 143 and "Traceback" not in err
        assert "flexbone: terminated (SIGTERM)" in err and f"continue with: flexbone train --resume {run}" in err
        assert not (run / ".lock").exists() and (run / "checkpoint-last.pt").exists()


# -------------------------------------------------------------------------- malformed files, images
def test_predict_keeps_going_past_an_unreadable_image(capsys, tmp_path, weights):
    good = tmp_path / "digit.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(good.read_bytes()[:30])
    rc = main(["predict", "--model", "resnet8s_tiny", "--checkpoint", str(weights), str(bad), str(good), "--json"])
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    assert [json.loads(line)["image"] for line in out.splitlines()] == [str(good)]
    assert err.splitlines() == [err.splitlines()[0]] and f"cannot read image {bad}" in err


def test_predict_a_folder_classifies_every_image_in_it(capsys, tmp_path, weights):
    for i, sub in enumerate(["a", "a", "b"]):
        (tmp_path / sub).mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / sub / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["predict", "--model", "resnet8s_tiny", "--checkpoint", str(weights), str(tmp_path), "--json"]) == 0
    seen = [json.loads(line)["image"] for line in capsys.readouterr().out.splitlines()]
    assert seen == [str(tmp_path / "a" / "0.png"), str(tmp_path / "a" / "1.png"), str(tmp_path / "b" / "2.png")]
    empty = tmp_path / "empty"
    empty.mkdir()
    fails_cleanly(capsys, ["predict", "--model", "resnet8s_tiny", "--checkpoint", str(weights), str(empty)],
                  f"no image files", str(empty))


def test_predict_reads_a_16bit_png_as_its_picture(capsys, tmp_path, weights):
    """Same prediction for a 16-bit PNG as for its 8-bit version (not a white image)."""
    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(values).save(tmp_path / "deep.png")
    Image.fromarray((values >> 8).astype(np.uint8)).save(tmp_path / "flat.png")
    assert main(["predict", "--model", "resnet8s_tiny", "--checkpoint", str(weights), str(tmp_path / "deep.png"),
                 str(tmp_path / "flat.png"), "--json", "--topk", "10"]) == 0
    a, b = [json.loads(line)["topk"] for line in capsys.readouterr().out.splitlines()]
    assert a == b



def test_predict_takes_the_resize_filter_of_the_command_line(capsys, tmp_path, weights):
    """--interpolation (shared with validate / search / subnets) reaches predict's preprocessing."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (29, 29), dtype=np.uint8)).save(tmp_path / "noise.png")
    probs = {}
    for filt in ("nearest", "bicubic"):
        assert main(["predict", "--model", "resnet8s_tiny", "--checkpoint", str(weights), str(tmp_path / "noise.png"),
                     "--json", "--topk", "10", "--interpolation", filt]) == 0
        probs[filt] = json.loads(capsys.readouterr().out)["topk"]
    assert probs["nearest"] != probs["bicubic"]
    with pytest.raises(SystemExit) as e:
        main(["predict", "--model", "resnet8s_tiny", "--checkpoint", str(weights), str(tmp_path / "noise.png"),
              "--interpolation", "lanczos"])
    assert e.value.code == 2 and "invalid choice: 'lanczos'" in capsys.readouterr().err

# --------------------------------------------------------------------- malformed files, checkpoints
def _bad_checkpoints(tmp_path: Path) -> list[tuple[Path, str]]:
    import pickle

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    cut = tmp_path / "cut.safetensors"
    save_state_dict({"w": torch.zeros(64)}, cut)
    cut.write_bytes(cut.read_bytes()[:40])

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, evil)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"w": Payload()}))
    return [(garbage, "not a readable PyTorch checkpoint"), (cut, "not a readable safetensors file"),
            (evil, "refused to load"), (raw, "refused to load")]


def test_malformed_checkpoints_fail_in_one_line_without_unsafe_advice(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    cases = _bad_checkpoints(tmp_path)
    before = snapshot(tmp_path)
    for path, fragment in cases:
        for argv in (["validate", "--model", "resnet8s_tiny", "--checkpoint", str(path), "--data", "digits"],
                     ["predict", "--model", "resnet8s_tiny", "--checkpoint", str(path), str(path)]):
            with _no_warnings():
                line = fails_cleanly(capsys, argv, fragment)
            assert "weights_only=False" not in line and "will likely succeed" not in line
    assert snapshot(tmp_path) == before


class _no_warnings:
    """Fail if a warning (torch's UserWarning about pickle protocols, say) is emitted in the block."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self.caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        assert not [w for w in self.caught if issubclass(w.category, UserWarning)], [str(w.message) for w in self.caught]


def test_resume_from_a_corrupt_checkpoint(capsys, tmp_path, finished_run):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    (run / "checkpoint-last.pt").write_bytes(b"\0" * 100)
    before = snapshot(run)
    fails_cleanly(capsys, ["train", "--resume", str(run), "--no-progress"], "checkpoint-last.pt")
    assert snapshot(run) == before


# ----------------------------------------------------------------------- malformed recipes and JSON
@pytest.mark.parametrize("text, fragment", [
    ("model: [unclosed\n", "recipe"),
    ("- a list\n- not sections\n", "must be a mapping of sections"),
    ("model:\n  nmae: resnet18\n", "Did you mean"),
    ("data:\n  batch_size: -4\n", "data.batch_size must be positive"),
    ("\xff\xfe binary \x00", "recipe"),
])
def test_malformed_recipe_files(capsys, tmp_path, text, fragment):
    recipe = tmp_path / "bad.yaml"
    recipe.write_bytes(text.encode("latin-1"))
    before = snapshot(tmp_path)
    fails_cleanly(capsys, ["train", "--recipe", str(recipe), "--train.output_dir", str(tmp_path / "runs")], fragment)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "is not valid JSON"),
    ('{"format": "something-else"}', "is not a flexbone sub-network config"),
    ("[1, 2]", "is not a flexbone sub-network config"),
])
def test_malformed_subnet_config_json(tmp_path, text, fragment):
    from flexbone.elastic import load_subnet
    from flexbone.errors import FlexboneError

    (tmp_path / "config.json").write_text(text)
    with pytest.raises(FlexboneError, match=fragment):
        load_subnet(tmp_path)


def test_malformed_subnet_config_text():
    from flexbone.elastic import SubnetConfig
    from flexbone.errors import FlexboneError

    for text in ("{", '{"depth": "deep"}', "[]"):
        with pytest.raises(FlexboneError):
            SubnetConfig.from_json(text)


# ---------------------------------------------------------------------- subnets: rows as they come
@pytest.fixture(scope="module")
def supernet_weights(tmp_path_factory):
    from flexbone.config import load_recipe
    from flexbone.train import engine
    from test_elastic_training import DIGITS

    out = tmp_path_factory.mktemp("supernet")
    recipe = load_recipe("sandwich_mbv3", {**DIGITS, "schedule.epochs": 1, "train.output_dir": str(out),
                                           "train.run_name": "run"})
    return engine.run(recipe, progress=False, quiet=True).weights


def _subnets(out: Path, weights: Path, *extra: str) -> int:
    return main(["subnets", "--checkpoint", str(weights), "--data", "digits", "--out", str(out), "--n", "4",
                 "--bn-batches", "1", "--batch-size", "64", "--workers", "0", "--no-progress", "--threads", "1",
                 *extra])


@pytest.mark.slow
def test_interrupted_subnets_keeps_rows_and_resumes(capsys, tmp_path, monkeypatch, supernet_weights):
    import csv

    from flexbone.cli import subnets
    from flexbone.train import engine

    assert _subnets(tmp_path / "whole.csv", supernet_weights) == 0
    capsys.readouterr()
    real, calls = engine.evaluate, []

    def evaluate(*a, **k):  # the third sub-network's evaluation is interrupted
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine, "evaluate", evaluate)
    out = tmp_path / "s.csv"
    assert _subnets(out, supernet_weights) == 130
    err = capsys.readouterr().err
    partial = subnets.partial_path(out)
    assert err.splitlines()[-2:] == ["flexbone: interrupted", f"flexbone: kept 2 evaluated sub-network(s) in "
                                     f"{partial}; rerun the same command with --resume to continue"]
    assert not out.exists() and len(list(csv.DictReader(partial.open()))) == 2
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    assert _subnets(out, supernet_weights, "--resume") == 0
    assert len(calls) == 2  # only the two that were missing
    assert not partial.exists()
    whole, resumed = (list(csv.DictReader(p.open())) for p in (tmp_path / "whole.csv", out))
    assert resumed == whole  # the same rows as a run that was never interrupted


@pytest.mark.slow
def test_subnets_late_write_failure_keeps_the_rows(capsys, tmp_path, monkeypatch, supernet_weights):
    import csv

    from flexbone.cli import subnets

    real = subnets.write_csv
    out = tmp_path / "s.csv"

    def write_csv(rows, path):
        if Path(path) == out:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(rows, path)

    monkeypatch.setattr(subnets, "write_csv", write_csv)
    partial = subnets.partial_path(out)
    fails_cleanly(capsys, ["subnets", "--checkpoint", str(supernet_weights), "--data", "digits", "--out", str(out),
                           "--n", "2", "--bn-batches", "1", "--workers", "0", "--no-progress", "--threads", "1"],
                  f"cannot write {out} (no space left on device); the 2 evaluated rows are kept in {partial}")
    assert len(list(csv.DictReader(partial.open()))) == 2


def test_subnets_resume_with_a_malformed_partial_csv(capsys, tmp_path, supernet_weights):
    from flexbone.cli import subnets

    out = tmp_path / "s.csv"
    partial = subnets.partial_path(out)
    partial.write_text("kind,config,top1\nmin,{},not-a-number\n")
    before = snapshot(tmp_path)
    fails_cleanly(capsys, ["subnets", "--checkpoint", str(supernet_weights), "--data", "digits", "--out", str(out),
                           "--resume", "--workers", "0", "--no-progress"],
                  f"{partial} line 2: not a row written by flexbone subnets")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------- memory estimate
def test_activation_estimate_counts_each_new_output_once():
    from flexbone.train.memory import activation_bytes_per_image, estimate_training_memory

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
                              torch.nn.Conv2d(8, 4, 1), torch.nn.ReLU())
    # per image at 16 px, fp32: conv 8x16x16, the in-place ReLU nothing new, conv 4x16x16, ReLU 4x16x16
    assert activation_bytes_per_image(net, 16) == 4 * 16 * 16 * (8 + 4 + 4)
    params = sum(p.numel() for p in net.parameters())
    est = estimate_training_memory(net, batch_size=10, img_size=16, optimizer="adamw", ema=True)
    assert est.parameter_bytes == params * 4 * (1 + 1 + 2 + 1)  # weights, grads, two AdamW slots, EMA
    assert est.activation_bytes == 10 * 4 * 16 * 16 * 16


def test_a_run_that_cannot_fit_is_refused_before_it_starts(capsys, tmp_path, monkeypatch):
    from flexbone.train import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 2**30)  # 1 GiB free
    out = tmp_path / "runs"
    fails_cleanly(capsys, ["train", "--recipe", "quickstart", "--data.img_size", "256", "--data.batch_size", "512",
                           "--no-progress", "--train.output_dir", str(out)],
                  "this run needs about", "activations of 512 images at 256 px", "but 1.0 GiB are available",
                  "--train.memory_check false")
    assert not out.exists()


def test_memory_check_false_skips_the_check(capsys, tmp_path, monkeypatch):
    from flexbone.train import memory

    def refuse(*a, **k):
        raise AssertionError("checked although train.memory_check is false")

    monkeypatch.setattr(memory, "check_training_memory", refuse)
    assert main(["train", "--recipe", "quickstart", *TINY, "--train.memory_check", "false",
                 "--train.output_dir", str(tmp_path)]) == 0


@pytest.mark.slow
def test_the_digits_form_of_the_sandwich_recipe_fits_and_trains(capsys, tmp_path):
    from flexbone.config import load_recipe
    from flexbone.models import create_model
    from flexbone.train.memory import estimate_training_memory

    recipe = load_recipe("sandwich_mbv3_digits")
    model = create_model(recipe.model.name, num_classes=10)
    est = estimate_training_memory(model, batch_size=recipe.data.batch_size, img_size=recipe.data.img_size)
    assert est.total < 2**30  # under a GiB, where the ImageNet form needs ~140 GB
    big = load_recipe("sandwich_mbv3")
    big_est = estimate_training_memory(create_model(big.model.name, num_classes=10),
                                       batch_size=big.data.batch_size, img_size=big.data.img_size)
    assert big_est.total > 64 * 2**30
    assert main(["train", "--recipe", "sandwich_mbv3_digits", "--schedule.epochs", "1", "--train.max_steps_per_epoch",
                 "2", "--elastic.bn_batches", "1", "--no-progress", "--threads", "1",
                 "--train.output_dir", str(tmp_path)]) == 0


# ------------------------------------------------------------------------------------ fast help
def test_help_and_the_parser_import_no_torch():
    """`flexbone --help` builds every command's parser; none of them may import torch (seconds of start-up)."""
    code = ("import sys, flexbone.cli as c; c.build_parser(); "
            "heavy = [m for m in ('torch', 'torchvision', 'timm', 'numpy') if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_the_export_parser_defaults_are_the_libraries():
    from flexbone.cli import export as cli_export
    from flexbone.export import artifact, onnx

    assert cli_export.FORMATS == artifact.FORMATS
    assert cli_export.DEFAULT_OPSET == onnx.DEFAULT_OPSET
    assert cli_export.DEFAULT_CALIB_BATCHES == artifact.DEFAULT_CALIB_BATCHES
