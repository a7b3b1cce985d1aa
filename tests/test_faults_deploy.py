"""Faults and bad input for the commands that came after tests/test_faults.py: progressive shrinking (train's chain
of runs), search, export, compare, stitch, latency-table and demo elastic.

As there, each case runs the command line in-process and asserts what a user sees and keeps: one
``flexbone: error:`` line on stderr (status 2 for bad input), no traceback, and nothing that existed at the output
changed (snapshotted byte for byte), nothing half-written beside it. Every refusal here comes before any real work,
so the cases are fast; the few that must do work (an interrupted search, an interrupted chain) use toy models.
"""
from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import pytest
import torch

from flexbone.checkpoint import save_state_dict
from flexbone.cli import main
from flexbone.models import create_model
from test_faults import _fill, blocker, fails_cleanly, full_disk, snapshot  # noqa: F401 - fixtures

pytestmark = pytest.mark.cli

SUPERNET = "ofa_digits_mbv3"  # the registered digits supernet (resolutions 12-24 px): the smallest there is


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A random ofa_digits_mbv3 and resnet8s_tiny checkpoint, and malformed files of every kind the commands read."""
    d = tmp_path_factory.mktemp("inputs")
    f = {"supernet": d / "supernet.safetensors", "resnet": d / "resnet8s.safetensors"}
    save_state_dict(create_model(SUPERNET, num_classes=10).state_dict(), f["supernet"])
    save_state_dict(create_model("resnet8s_tiny", num_classes=10).state_dict(), f["resnet"])
    f["garbage"] = d / "garbage.pt"
    f["garbage"].write_bytes(b"this is not a checkpoint" * 10)
    f["cut"] = d / "cut.safetensors"
    f["cut"].write_bytes(f["resnet"].read_bytes()[:100])
    f["not_json"] = d / "not_json.json"
    f["not_json"].write_text("{not json")
    f["a_list"] = d / "a_list.json"
    f["a_list"].write_text("[1, 2]")
    # accuracy predictors: a safetensors file needs its JSON beside it
    f["predictor_bad_json"] = d / "pred_a.safetensors"
    f["predictor_bad_json"].write_bytes(f["cut"].read_bytes())
    (d / "pred_a.json").write_text("{not json")
    f["predictor_no_json"] = d / "pred_b.safetensors"
    f["predictor_no_json"].write_bytes(f["resnet"].read_bytes())
    # sub-network and SN-Net folders with a broken config.json
    for name, text in (("subnet_bad_json", "{not json"), ("subnet_bad_format", '{"format": "something-else"}')):
        (d / name).mkdir()
        (d / name / "config.json").write_text(text)
        f[name] = d / name
    (d / "empty").mkdir()
    f["empty"] = d / "empty"
    return f


@pytest.fixture(scope="module")
def latency_tables(tmp_path_factory) -> dict[str, Path]:
    """A real latency table of the digits supernet at 12 px (one timing per part), and broken copies of it."""
    from flexbone.search.latency import LatencyTable

    d = tmp_path_factory.mktemp("tables")
    good = d / "lut12.json"
    LatencyTable.build(create_model(SUPERNET, num_classes=10), resolutions=[12], threads=1, warmup=0,
                       repeats=1).save(good)
    table = json.loads(good.read_text())
    out = {"good": good}

    def variant(name: str, change) -> None:
        t = json.loads(good.read_text())
        change(t)
        (d / name).write_text(json.dumps(t))
        out[name] = d / name

    variant("other_space", lambda t: t["space"].update(depth=[[2, 3]] * len(table["space"]["depth"])))
    variant("other_supernet", lambda t: t.update(supernet="ofa_resnet50", space={"name": "ofa_resnet50"}))
    variant("wrong_format", lambda t: t.update(format="something-else"))
    variant("bad_entries", lambda t: t.update(entries={"stem": "not a mapping"}))
    (d / "cut.json").write_text(good.read_text()[:300])
    out["cut"] = d / "cut.json"
    return out


def _fails(capsys, argv, *fragments, status=2, keep: Path | None = None) -> str:
    """fails_cleanly, plus: nothing under ``keep`` (a folder) changed."""
    before = snapshot(keep) if keep is not None else None
    line = fails_cleanly(capsys, argv, *fragments, status=status)
    if keep is not None:
        assert snapshot(keep) == before
    return line


def _user_folder(tmp_path: Path, marker: str | None = None) -> Path:
    """A folder a user already has at --out, with a file in it that must survive every failure; with ``marker``
    (``search.csv``...) it is an earlier output of the command, which a failed run must leave as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file\n")
    if marker:
        (out / marker).write_text("an earlier result\n")
    return out


@pytest.mark.parametrize("argv, marker", [
    (["search", "--checkpoint", "x.safetensors", "--data", "digits", "--budget", "macs=1G"], "search.csv"),
    (["compare", "resnet8s_tiny"], "compare.csv"),
    (["stitch", "--anchors", "resnet8s_tiny,resnet10s", "--data", "digits"], "config.json"),
])
def test_a_folder_of_the_users_own_files_is_never_replaced(capsys, tmp_path, argv, marker):
    """search, compare and stitch replace their --out folder as a whole: pointed at a folder of other files
    (`--out .`) they refuse before any work instead of deleting them; an earlier output of theirs is replaced."""
    out = _user_folder(tmp_path)
    _fails(capsys, [*argv, "--out", str(out)], f"{out} already holds other files", marker, keep=tmp_path)
    from flexbone.outputs import check_replaceable

    (out / marker).write_text("an earlier output\n")
    assert check_replaceable(out, marker) == out  # an earlier output of the command may be replaced
    assert check_replaceable(tmp_path / "new", marker) == tmp_path / "new"


# ---------------------------------------------------------------------------- progressive shrinking
PS = ["train", "--recipe", "ofa_mbv3_ps", "--no-progress", "--threads", "1", "--data.workers", "0"]


@pytest.mark.parametrize("extra, fragment", [
    (["--model", "resnet_nonexistent", "--data", "digits"], "unknown model 'resnet_nonexistent'"),
    (["--data", "{tmp}/no_such_folder"], "is not a folder"),
    (["--data", "{tmp}/empty_data"], "has no 'train' folder"),
    (["--data", "digits", "--elastic.phasez", "kernel"], "unknown override key 'elastic.phasez'"),
    (["--data", "digits", "--elastic.phases", "[]"], "elastic.phases"),
])
def test_a_failed_progressive_shrinking_chain_leaves_no_folder(capsys, tmp_path, extra, fragment):
    (tmp_path / "empty_data").mkdir()
    out = tmp_path / "runs" / "deeper"  # folders the chain would create, none of which may stay
    argv = PS + ["--train.output_dir", str(out), *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    fails_cleanly(capsys, argv, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_data"]


def test_a_chain_into_an_unwritable_place_fails_first(capsys, blocker):  # noqa: F811
    _fails(capsys, PS + ["--data", "digits", "--train.output_dir", str(blocker / "runs")], "cannot write",
           "is not a folder", keep=blocker.parent)


def test_a_new_chain_never_writes_into_an_earlier_one(capsys, tmp_path):
    chain = tmp_path / "ps"
    (chain / "phase1-full").mkdir(parents=True)
    (chain / "recipe.yaml").write_text("# the earlier chain's recipe\n")
    _fails(capsys, PS + ["--data", "digits", "--train.output_dir", str(tmp_path), "--train.run_name", "ps"],
           "already holds a progressive-shrinking run", f"--resume {chain}", keep=tmp_path)


def _toy_chain_recipe(tmp_path: Path) -> Path:
    """ofa_mbv3_ps on the digits with the toy supernet of the elastic tests: two phases of one 2-step epoch."""
    from flexbone.config import dump_recipe, load_recipe
    from test_elastic_training import DIGITS

    recipe = load_recipe("ofa_mbv3_ps", {**DIGITS, "train.memory_check": False})
    recipe.elastic.phases = tuple({**p, "epochs": 1} for p in recipe.elastic.phases[:2])
    path = tmp_path / "toy_ps.yaml"
    dump_recipe(recipe, path)
    return path


_current_phase: list[str | None] = [None]  # the phase the engine runs now (set by the phase_spy fixture)


def _interrupt_phase(monkeypatch, phase: str) -> None:
    """Ctrl-C in the first epoch of ``phase``."""
    from flexbone.train import engine

    real = engine.train_one_epoch

    def train_one_epoch(*a, **k):
        if _current_phase[0] == phase:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine, "train_one_epoch", train_one_epoch)


@pytest.fixture
def phase_spy(monkeypatch):
    """Record the phase the engine is running (its recipe's elastic.phase) in ``_current_phase``."""
    from flexbone.train import engine

    real = engine._run

    def _run(recipe, *a, **k):
        _current_phase[0] = recipe.elastic.phase
        return real(recipe, *a, **k)

    monkeypatch.setattr(engine, "_run", _run)
    yield
    _current_phase[0] = None


def test_a_chain_interrupted_in_its_first_epoch_leaves_nothing(capsys, tmp_path, monkeypatch, phase_spy):
    recipe = _toy_chain_recipe(tmp_path)
    _interrupt_phase(monkeypatch, "full")
    out = tmp_path / "runs"
    assert main(["train", "--recipe", str(recipe), "--no-progress", "--threads", "1", "--train.output_dir", str(out),
                 "--train.run_name", "ps"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[0] == "flexbone: interrupted"
    assert "nothing was kept" in err
    assert not out.exists()


@pytest.mark.slow
def test_a_chain_interrupted_in_phase_two_names_the_chain_to_resume(capsys, tmp_path, monkeypatch, phase_spy):
    recipe = _toy_chain_recipe(tmp_path)
    _interrupt_phase(monkeypatch, "kernel")
    chain = tmp_path / "runs" / "ps"
    assert main(["train", "--recipe", str(recipe), "--no-progress", "--threads", "1", "--train.output_dir",
                 str(tmp_path / "runs"), "--train.run_name", "ps"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (f"flexbone: progressive-shrinking folder {chain} keeps phase1-full; continue "
                                    f"every remaining phase with: flexbone train --resume {chain}")
    assert (chain / "phase1-full" / "checkpoint-last.pt").is_file() and not (chain / "phase2-kernel").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(chain), "--no-progress", "--threads", "1"]) == 0  # and it does continue
    assert torch.load(chain / "phase2-kernel" / "checkpoint-last.pt", weights_only=True)["epoch"] == 1


# ------------------------------------------------------------------------------------------- search
def _search(files, out, *extra):
    return ["search", "--checkpoint", str(files["supernet"]), "--supernet", SUPERNET, "--data", "digits",
            "--img-size", "12", "--out", str(out), "--workers", "0", "--threads", "1", "--no-progress", *extra]


def test_search_checks_its_output_before_loading_anything(capsys, blocker, files):  # noqa: F811
    _fails(capsys, _search(files, blocker / "found", "--budget", "macs=1G"), "cannot write the folder",
           "is not a folder", keep=blocker.parent)


@pytest.mark.parametrize("change, fragment", [
    (dict(checkpoint="garbage"), "garbage.pt"),
    (dict(checkpoint="cut"), "not a readable safetensors file"),
    (dict(checkpoint="resnet"), f"does not fit {SUPERNET}"),
    (dict(args=["--supernet", "ofa_nonexistent"]), "unknown model 'ofa_nonexistent'"),
    (dict(args=["--supernet", "resnet18"]), "resnet18 is not an elastic supernet"),
    (dict(budget="macs=1"), f"budget macs<=1 cannot be met: the smallest sub-network of {SUPERNET} costs macs = "),
    (dict(budget="params=10"), "budget params<=10 cannot be met"),
    (dict(budget="macs=0"), "the bound must be positive"),
    (dict(budget="flops=3M"), "unknown metric 'flops'"),
    (dict(budget="macs=lots"), "is not METRIC=VALUE"),
    (dict(budget="latency=0.000001ms", table="good"), "budget latency<=1e-06 ms cannot be met"),
    (dict(table="not_json"), "cannot read latency table"),
    (dict(table="a_list"), "is not a flexbone latency table"),
    (dict(table="wrong_format"), "is not a flexbone latency table"),
    (dict(table="cut"), "cannot read latency table"),
    (dict(table="other_space"), "latency table was built for"),
    (dict(table="other_supernet"), "built for ofa_resnet50's space"),
    (dict(table="good", args=["--img-size", "16"]), "has no timings at 16 px (it has 12)"),
    (dict(table="missing"), "latency table not found"),
    (dict(predictor="not_json"), "is not a flexbone accuracy predictor"),
    (dict(predictor="predictor_bad_json"), "pred_a"),
    (dict(predictor="predictor_no_json"), "accuracy predictor not found"),
    (dict(args=["--img-size", "13"]), f"13 px, which is not a resolution of {SUPERNET} (12, 16, 20, 24)"),
    (dict(args=["--crop-pct", "0"]), "--crop-pct: must be a number in (0, 1], got 0"),
    (dict(args=["--n", "1"]), "--n: must be an integer >= 2, got 1"),
    (dict(args=["--population", "1"]), "--population: must be an integer >= 2"),
    (dict(args=["--data", "{tmp}/no_such_folder"]), "not a folder"),
])
def test_search_bad_input_fails_in_one_line_and_keeps_the_output(capsys, tmp_path, files, latency_tables, change,
                                                                   fragment):
    out = _user_folder(tmp_path, "search.csv")
    tables = {**latency_tables, "not_json": files["not_json"], "a_list": files["a_list"],
              "missing": tmp_path / "missing.json"}
    argv = _search(files, out, "--budget", change.get("budget", "latency=1s" if "table" in change else "macs=1G"))
    argv[2] = str(files[change.get("checkpoint", "supernet")])
    if "table" in change:
        argv += ["--latency-table", str(tables[change["table"]])]
    if "predictor" in change:
        argv += ["--predictor", str(files[change["predictor"]])]
    argv += [a.replace("{tmp}", str(tmp_path)) for a in change.get("args", [])]
    _fails(capsys, argv, fragment, keep=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staged folder, no partial rows


def test_search_latency_table_with_malformed_entries(capsys, tmp_path, files, latency_tables):
    out = _user_folder(tmp_path, "search.csv")
    _fails(capsys, _search(files, out, "--budget", "latency=1s", "--latency-table", str(latency_tables["bad_entries"])),
           "latency table", keep=tmp_path)


def _fast_search(files, out, *extra):
    return _search(files, out, "--budget", "macs=1G", "--n", "4", "--bn-batches", "1", "--batch-size", "256",
                   "--population", "8", "--generations", "2", "--predictor-steps", "5", "--warmup", "0",
                   "--repeats", "1", *extra)


@pytest.mark.slow
def test_interrupted_search_keeps_its_rows_and_resumes(capsys, tmp_path, monkeypatch, files):
    from flexbone.train import engine

    real, calls = engine.evaluate, []

    def evaluate(*a, **k):  # the third sub-network's evaluation is interrupted
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(engine, "evaluate", evaluate)
    out = tmp_path / "found"
    partial = tmp_path / "found.partial.csv"
    assert main(_fast_search(files, out)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-2:] == ["flexbone: interrupted", f"flexbone: kept 2 evaluated sub-network(s) in {partial}; "
                                     f"rerun the same command with --resume to continue"]
    assert not out.exists() and len(list(csv.DictReader(partial.open()))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["found.partial.csv"]  # no staged folder left
    kept = list(csv.DictReader(partial.open()))

    calls.clear()
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    assert main(_fast_search(files, out, "--resume")) == 0
    # the two kept rows are reused: the two missing ones and the one found sub-network are evaluated
    assert len(calls) == 3
    rows = list(csv.DictReader((out / "subnets.csv").open()))
    assert [r["config"] for r in rows[:2]] == [r["config"] for r in kept]
    assert [r["top1"] for r in rows[:2]] == [r["top1"] for r in kept]
    assert not partial.exists()


@pytest.mark.slow
def test_subnets_interrupted_twice_keeps_the_rows_of_both_runs(capsys, tmp_path, monkeypatch, files):
    """A resumed `flexbone subnets` that is interrupted again keeps the rows of the first run too (it rewrote the
    partial file with its own new rows only)."""
    from flexbone.cli.subnets import partial_path
    from flexbone.train import engine

    real = engine.evaluate

    def interrupt_at(n: int) -> None:
        calls = []

        def evaluate(*a, **k):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*a, **k)

        monkeypatch.setattr(engine, "evaluate", evaluate)

    out = tmp_path / "s.csv"
    argv = ["subnets", "--checkpoint", str(files["supernet"]), "--supernet", SUPERNET, "--data", "digits",
            "--img-size", "12", "--out", str(out), "--n", "4", "--bn-batches", "1", "--batch-size", "256",
            "--workers", "0", "--threads", "1", "--no-progress"]
    interrupt_at(3)  # two rows done
    assert main(argv) == 130
    interrupt_at(2)  # resumed: one more row done, then Ctrl-C
    assert main(argv + ["--resume"]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"flexbone: kept 3 evaluated sub-network(s) in {partial_path(out)}")
    assert len(list(csv.DictReader(partial_path(out).open()))) == 3


def test_search_interrupted_before_any_row_says_nothing_was_kept(capsys, tmp_path, monkeypatch, files):
    from flexbone.train import engine

    def evaluate(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "evaluate", evaluate)
    out = _user_folder(tmp_path, "search.csv")
    before = snapshot(tmp_path)
    assert main(_fast_search(files, out)) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"flexbone: nothing kept: {out} is written only when the search finishes"
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_search_on_a_full_disk_keeps_the_output_and_the_rows(capsys, tmp_path, monkeypatch, files):
    """The disk fills as the found sub-network is saved: the user's folder stays as it was, the rows are kept."""
    from flexbone.elastic import subnets as elastic_subnets

    def save_subnet(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(elastic_subnets, "save_subnet", save_subnet)
    out = _user_folder(tmp_path, "search.csv")
    before = snapshot(out)
    partial = tmp_path / "out.partial.csv"
    fails_cleanly(capsys, _fast_search(files, out), f"cannot write {out}: the disk is full; kept 4 evaluated "
                  f"sub-network(s) in {partial}; rerun the same command with --resume to continue")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.partial.csv"]


# ------------------------------------------------------------------------------------------- export
def _export(*argv):
    return ["export", "--img-size", "8", *argv]


def test_export_checks_its_output_first(capsys, blocker):  # noqa: F811
    _fails(capsys, _export("--model", "resnet8s_tiny", "--format", "onnx", "--out", str(blocker / "m.onnx")),
           "cannot write the file", "is not a folder", keep=blocker.parent)


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "resnet8s_tiny", "--format", "tflite"], "unknown export format 'tflite'; choose from onnx, pt2"),
    (["--model", "resnet_nonexistent", "--format", "onnx"], "unknown model 'resnet_nonexistent'"),
    (["--model", "resnet8s_tiny", "--checkpoint", "{garbage}", "--format", "onnx"], "garbage.pt"),
    (["--model", "resnet8s_tiny", "--checkpoint", "{cut}", "--format", "safetensors"], "not a readable safetensors"),
    (["--model", "resnet8s_tiny", "--checkpoint", "{supernet}", "--format", "pt2"], "checkpoint does not fit ResNet"),
    (["--checkpoint", "{resnet}", "--format", "onnx"], "does not say which model it holds: pass --model NAME"),
    (["--model", "resnet8s_tiny", "--checkpoint", "{tmp}/none.pt", "--format", "onnx"], "checkpoint not found"),
    (["--subnet", "{subnet_bad_json}", "--format", "onnx"], "is not valid JSON"),
    (["--subnet", "{subnet_bad_format}", "--format", "onnx"], "is not a flexbone sub-network config"),
    (["--subnet", "{tmp}/no_subnet", "--format", "onnx"], "no sub-network config at"),
    (["--model", "resnet8s_tiny", "--subnet", "{subnet_bad_json}", "--format", "onnx"], "not both"),
    (["--format", "onnx"], "nothing to export"),
    (["--model", "resnet8s_tiny", "--format", "onnx", "--opset", "3"], "--opset: must be an integer >= 7, got 3"),
    (["--model", "resnet8s_tiny", "--format", "onnx", "--opset", "99"], "--opset must be in [13, "),
    (["--model", "resnet8s_tiny", "--format", "onnx", "--img-size", "0"], "must be an integer in [1, 4096], got 0"),
    (["--model", "resnet8s_tiny", "--format", "onnx", "--batch-size", "0"], "--batch-size: must be an integer in [1"),
    (["--model", "resnet8s_tiny", "--format", "safetensors", "--int8"], "--int8 quantizes an ONNX model"),
    (["--model", "resnet8s_tiny", "--format", "onnx", "--int8"], "--int8 needs --calib-data"),
    (["--model", "resnet8s_tiny", "--format", "onnx", "--int8", "--calib-data", "{tmp}/none"], "not a folder"),
    (["--model", "resnet8s_tiny", "--format", "onnx", "--int8", "--calib-data", "{empty}"], "no class folders"),
    (["--model", "resnet8s_tiny", "--format", "safetensors", "--fold-bn"], "--fold-bn changes the parameters"),
    (["--model", "resnet8s_tiny", "--format", "safetensors", "--dynamic-batch"], "--dynamic-batch applies to onnx"),
])
def test_export_bad_input_fails_in_one_line_and_keeps_the_artifact(capsys, tmp_path, files, argv, fragment):
    out = tmp_path / "model.bin"
    out.write_bytes(b"the user's earlier artifact")
    (tmp_path / "model.bin.json").write_text('{"earlier": "sidecar"}')
    names = {**{k: str(v) for k, v in files.items()}, "tmp": str(tmp_path)}
    argv = [a.format(**names) if "{" in a else a for a in argv]
    _fails(capsys, _export(*argv, "--out", str(out)), fragment, keep=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.bin.json"]


def test_export_on_a_full_disk_leaves_the_earlier_artifact(capsys, tmp_path, monkeypatch):
    """The disk is full when the artifact is written: one line, the user's earlier files as they were."""
    from flexbone import checkpoint

    real = checkpoint.os.replace

    def replace(src, dst, *a, **k):
        if str(dst).endswith("model.onnx"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the user's earlier artifact")
    (tmp_path / "model.onnx.json").write_text('{"earlier": "sidecar"}')
    _fails(capsys, _export("--model", "resnet8s_tiny", "--format", "onnx", "--out", str(out)),
           "the disk is full (no space left on device)", status=1, keep=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]  # no temporary file


def test_export_sidecar_failure_leaves_the_earlier_pair(capsys, tmp_path, monkeypatch):
    from flexbone import outputs

    def write_json(path, obj, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs, "write_json", write_json)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the user's earlier artifact")
    (tmp_path / "model.onnx.json").write_text('{"earlier": "sidecar"}')
    _fails(capsys, _export("--model", "resnet8s_tiny", "--format", "onnx", "--out", str(out)), "the disk is full",
           status=1, keep=tmp_path)


def test_export_on_a_full_tmpfs(capsys, full_disk):  # noqa: F811
    """A real full disk (a 64 KiB tmpfs with 16 KiB free; the ONNX file needs ~0.7 MB): one line, nothing left."""
    earlier = full_disk / "model.onnx.json"
    earlier.write_text('{"earlier": "sidecar"}')
    _fill(full_disk, leave=16 * 1024)
    before = snapshot(full_disk)
    _fails(capsys, _export("--model", "resnet8s_tiny", "--format", "onnx", "--out", str(full_disk / "model.onnx")),
           "the disk is full", status=1)
    assert snapshot(full_disk) == before  # no artifact, no temporary file, the earlier sidecar as it was


@pytest.mark.slow
def test_search_on_a_full_tmpfs(capsys, full_disk, files):  # noqa: F811
    """The rows cannot be kept and the result cannot be written: one error line that says so; nothing left."""
    _fill(full_disk, leave=0)
    before = snapshot(full_disk)
    fails_cleanly(capsys, _fast_search(files, full_disk / "found"),
                  f"cannot write {full_disk / 'found'}: the disk is full; 4 evaluated sub-network(s) could not be "
                  f"kept ({full_disk / 'found.partial.csv'} was not writable)")
    assert snapshot(full_disk) == before


# ------------------------------------------------------------------------------------------ compare
COMPARE = ["--img-size", "8", "--repeats", "1", "--warmup", "0", "--threads", "1", "--no-progress"]


def test_compare_checks_its_output_first(capsys, blocker):  # noqa: F811
    _fails(capsys, ["compare", "resnet8s_tiny", *COMPARE, "--out", str(blocker / "cmp")], "cannot write the folder",
           keep=blocker.parent)
    _fails(capsys, ["compare", "resnet8s_tiny", *COMPARE, "--out", str(blocker)], "is not a folder",
           keep=blocker.parent)


@pytest.mark.parametrize("argv, fragment", [
    (["resnet_nonexistent"], "unknown model 'resnet_nonexistent'"),
    (["resnet8s_tiny", "--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
    (["resnet8s_tiny", "--img-size", "4"], "--img-size: must be an integer >= 8, got 4"),
    (["resnet8s_tiny", "--warmup", "-1"], "--warmup: must be an integer >= 0"),
    (["resnet8s_tiny", "--data", "digits", "--epochs", "0"], "--epochs: must be an integer >= 1"),
    (["resnet8s_tiny", "--data", "{tmp}/none"], "no such folder"),
    (["resnet8s_tiny", "--data", "{empty}"], "no train/ folder"),
    (["resnet8s_tiny", "--data", "digits", "--recipe", "{not_json}"], "is not valid YAML"),
    (["resnet8s_tiny", "--data", "digits", "--recipe", "{a_list}"], "must be a mapping of sections"),
    (["resnet8s_tiny", "--data", "digits", "--pretrained", "resnet8s_tiny={tmp}/none.pt"], "no file"),
    (["resnet8s_tiny", "--data", "digits", "--pretrained", "resnet8s_tiny={garbage}"], "garbage.pt"),
    (["resnet8s_tiny", "--data", "digits", "--pretrained", "resnet8s_tiny={cut}"], "not a readable safetensors"),
    # a readable checkpoint of another model: refused before any measurement, naming the first key that differs
    (["resnet10s", "--data", "digits", "--pretrained", "resnet10s={resnet}"],
     "does not fit resnet10s: layer2.0.conv1.weight has shape (32, 64, 3, 3) in the file"),
    (["resnet8s_tiny", "--device", "cuda:7"], "--device"),
])
def test_compare_bad_input_fails_in_one_line_and_keeps_the_output(capsys, tmp_path, files, argv, fragment):
    out = _user_folder(tmp_path, "compare.csv")
    names = {**{k: str(v) for k, v in files.items()}, "tmp": str(tmp_path)}
    argv = [a.format(**names) if "{" in a else a for a in argv]
    _fails(capsys, ["compare", *argv, *COMPARE, "--out", str(out)], fragment, keep=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_compare_data_folder_is_the_folder_not_the_recipes_digits(tmp_path):
    """`--data FOLDER` with the quickstart recipe (a digits recipe) fine-tunes on the folder (it trained on the
    digits before, silently)."""
    from argparse import Namespace

    from flexbone.cli.compare import finetune_recipe

    args = Namespace(data=str(tmp_path), recipe="quickstart", epochs=1, img_size=8, device="cpu")
    recipe = finetune_recipe(args, "resnet8s_tiny", None, tmp_path / "runs")
    assert (recipe.data.dataset, recipe.data.path) == ("imagefolder", str(tmp_path))


def test_train_data_folder_is_the_folder_not_the_recipes_digits(capsys, tmp_path):
    """`flexbone train --recipe quickstart --data FOLDER` reads the folder (it trained on the digits before)."""
    (tmp_path / "photos").mkdir()
    fails_cleanly(capsys, ["train", "--recipe", "quickstart", "--data", str(tmp_path / "photos"), "--no-progress",
                           "--train.output_dir", str(tmp_path / "runs")], "has no 'train' folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


# ------------------------------------------------------------------------------------------- stitch
def test_stitch_checks_its_output_first(capsys, blocker):  # noqa: F811
    _fails(capsys, ["stitch", "--anchors", "resnet8s_tiny,resnet10s", "--data", "digits", "--out",
                    str(blocker / "sn")], "cannot write the folder", keep=blocker.parent)


@pytest.mark.parametrize("argv, fragment", [
    (["--anchors", "resnet8s_tiny,resnet_nonexistent"], "unknown model 'resnet_nonexistent'"),
    (["--anchors", "resnet8s_tiny,resnet10s", "--checkpoints", "{garbage},{resnet}"], "garbage.pt"),
    (["--anchors", "resnet8s_tiny,resnet10s", "--checkpoints", "{resnet}"], "but 1 anchor checkpoints"),
    (["--anchors", "resnet8s_tiny,resnet10s", "--checkpoints", "{supernet},{resnet}"], "does not fit"),
    (["--anchors", "resnet8s_tiny,resnet10s", "--checkpoints", "{tmp}/none.pt,{resnet}"], "is not a file"),
    (["--anchors", "resnet8s_tiny,resnet10s", "--data", "{tmp}/none"], "--data {tmp}/none: no such folder"),
    (["--anchors", "resnet8s_tiny,resnet10s", "--data", "{empty}"], "cannot tell the number of classes"),
    (["--anchors", "resnet8s_tiny,resnet10s", "--stages", "9"], "stitching stage 9 does not exist"),
    (["--anchors", "resnet8s_tiny,resnet10s", "--stages", "x"], "comma-separated stage numbers"),
    (["--anchors", "resnet8s_tiny,resnet10s", "--init-images", "0"], "--init-images: must be an integer >= 1"),
    (["--from", "{subnet_bad_json}", "--evaluate"], "is not a saved SN-Net"),
    (["--from", "{subnet_bad_format}", "--evaluate"], "expected 'flexbone-snnet/1'"),
    (["--from", "{tmp}/none", "--evaluate"], "is not a saved SN-Net"),
    ([], "--anchors needs at least two registered models"),
])
def test_stitch_bad_input_fails_in_one_line_and_keeps_the_output(capsys, tmp_path, files, argv, fragment):
    out = _user_folder(tmp_path, "config.json")
    names = {**{k: str(v) for k, v in files.items()}, "tmp": str(tmp_path)}
    argv = [a.format(**names) if "{" in a else a for a in argv]
    fragment = fragment.format(**names)
    data = [] if "--data" in argv else ["--data", "digits"]
    _fails(capsys, ["stitch", *argv, *data, "--img-size", "8", "--workers", "0", "--no-progress", "--out", str(out)],
           fragment, keep=tmp_path)


# ------------------------------------------------------------------------- segmentation (validate, predict)
@pytest.mark.parametrize("argv, fragment", [
    (["validate", "--model", "seg_nonexistent", "--checkpoint", "{garbage}", "--data", "seg_digits"],
     "unknown model 'seg_nonexistent': expected seg_<head>_<backbone>"),
    (["validate", "--model", "seg_fpn_resnet8s_tiny", "--checkpoint", "{garbage}", "--data", "seg_digits"],
     "garbage.pt"),
    (["validate", "--model", "seg_fpn_resnet8s_tiny", "--checkpoint", "{resnet}", "--data", "seg_digits"],
     "does not fit seg_fpn_resnet8s_tiny"),
    (["validate", "--model", "seg_fpn_resnet8s_tiny", "--checkpoint", "{tmp}/none.pt", "--data", "seg_digits"],
     "checkpoint not found"),
    (["predict", "--model", "seg_fpn_resnet8s_tiny", "--checkpoint", "{resnet}", "--out", "{tmp}/blocker/masks",
      "{not_json}"], "is not a folder"),
    (["predict", "--model", "seg_fpn_resnet8s_tiny", "--checkpoint", "{cut}", "--out", "{tmp}/masks", "{not_json}"],
     "not a readable safetensors"),
])
def test_segmentation_bad_input_fails_in_one_line(capsys, tmp_path, files, argv, fragment):
    (tmp_path / "blocker").write_text("a file where a folder would have to be\n")
    names = {**{k: str(v) for k, v in files.items()}, "tmp": str(tmp_path)}
    _fails(capsys, [a.format(**names) if "{" in a else a for a in argv], fragment, keep=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


# ------------------------------------------------------------------------------------ latency-table
def test_latency_table_checks_its_output_first(capsys, blocker):  # noqa: F811
    _fails(capsys, ["latency-table", "--supernet", SUPERNET, "--out", str(blocker / "lut.json")],
           "cannot write the file", keep=blocker.parent)


@pytest.mark.parametrize("argv, fragment", [
    (["--supernet", "ofa_nonexistent"], "unknown model 'ofa_nonexistent'"),
    (["--supernet", "resnet8s_tiny"], "resnet8s_tiny is not a supernet"),
    (["--resolutions", "13"], f"resolution 13 is not in {SUPERNET}'s space; allowed: 12, 16, 20, 24"),
    (["--resolutions", "0"], "expected positive sizes"),
    (["--resolutions", "twelve"], "expected comma-separated sizes"),
    (["--batch-size", "0"], "--batch-size: must be an integer >= 1, got 0"),
    (["--repeats", "0"], "--repeats: must be an integer >= 1"),
    (["--num-classes", "-1"], "--num-classes: must be an integer >= 0"),
    (["--clock", "cpu", "--threads", "2"], "only with one thread"),
    (["--backend", "onnxruntime", "--dtype", "bf16"], "fp32"),
])
def test_latency_table_bad_input_fails_in_one_line_and_keeps_the_table(capsys, tmp_path, argv, fragment):
    out = tmp_path / "lut.json"
    out.write_text('{"the user": "earlier table"}')
    argv = argv if "--supernet" in argv else ["--supernet", SUPERNET, *argv]
    _fails(capsys, ["latency-table", *argv, "--no-progress", "--out", str(out)], fragment, keep=tmp_path)


def test_latency_table_interrupted_keeps_the_earlier_table(capsys, tmp_path, monkeypatch):
    from flexbone.search import latency

    def build(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(latency.LatencyTable, "build", build)
    out = tmp_path / "lut.json"
    out.write_text('{"the user": "earlier table"}')
    before = snapshot(tmp_path)
    assert main(["latency-table", "--supernet", SUPERNET, "--resolutions", "12", "--no-progress", "--out",
                 str(out)]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-2:] == ["flexbone: interrupted", f"flexbone: nothing written: {out} is written when "
                                                              f"every part is timed"]
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------- demo elastic
@pytest.mark.parametrize("argv, fragment", [
    (["--epochs", "1"], "--epochs: must be an integer >= 2, got 1"),
    (["--n", "0"], "--n: must be an integer >= 4"),
    (["--threads", "0"], "--threads: must be an integer >= 1"),
])
def test_demo_elastic_options_fail_in_one_line(capsys, tmp_path, argv, fragment):
    fails_cleanly(capsys, ["demo", "elastic", *argv, "--output-dir", str(tmp_path)], fragment)
    assert list(tmp_path.iterdir()) == []


def test_demo_elastic_checks_its_output_first(capsys, blocker):  # noqa: F811
    _fails(capsys, ["demo", "elastic", "--output-dir", str(blocker / "runs")], "cannot write the folder",
           keep=blocker.parent)
