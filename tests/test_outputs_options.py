"""The shared building blocks of clean failures: range-checked options, checked and atomic outputs,
interrupt notes printed by the command line."""
from __future__ import annotations

import argparse
import errno
import json
import os

import pytest

from flexbone import outputs
from flexbone.errors import ConfigError
from flexbone.interrupt import interrupt_note, interrupted_message, take_notes
from flexbone.options import check_range, float_range, int_range


# ----------------------------------------------------------------------------------------- options
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    p.add_argument("--batch-size", type=int_range(1))
    p.add_argument("--crop-pct", type=float_range(0, 1, lo_open=True))
    p.add_argument("--size", type=int_range(16, 4096))
    return p


@pytest.mark.parametrize("argv,words", [
    (["--batch-size", "0"], "must be an integer >= 1, got 0"),
    (["--batch-size", "-1"], "must be an integer >= 1, got -1"),
    (["--batch-size", "2.5"], "must be an integer >= 1, got '2.5'"),
    (["--crop-pct", "0"], r"must be a number in \(0, 1\], got 0"),
    (["--crop-pct", "1.5"], r"must be a number in \(0, 1\], got 1.5"),
    (["--crop-pct", "nan"], r"in \(0, 1\], got nan"),
    (["--size", "8"], r"in \[16, 4096\], got 8"),
])
def test_range_types_refuse_with_the_range(argv, words):
    with pytest.raises(argparse.ArgumentError, match=words):
        _parser().parse_args(argv)


def test_range_types_accept_the_bounds():
    args = _parser().parse_args(["--batch-size", "1", "--crop-pct", "1", "--size", "4096"])
    assert (args.batch_size, args.crop_pct, args.size) == (1, 1.0, 4096)


def test_check_range():
    assert check_range("drop_path_rate", 0.0, 0, 1, hi_open=True) == 0.0
    for bad in (2.0, 1.0, -0.1, float("nan"), "0.1", True):
        with pytest.raises(ConfigError, match=r"drop_path_rate must be a number in \[0, 1\), got"):
            check_range("drop_path_rate", bad, 0, 1, hi_open=True)
    with pytest.raises(ConfigError, match="num_classes must be a number >= 0, got -1"):
        check_range("num_classes", -1, 0)


# ----------------------------------------------------------------------------------------- outputs
def test_check_writable_accepts_new_paths_and_leaves_nothing(tmp_path):
    assert outputs.check_writable(tmp_path / "new" / "deeper" / "out.csv") == tmp_path / "new" / "deeper" / "out.csv"
    outputs.check_writable(tmp_path / "run", is_dir=True)
    assert list(tmp_path.iterdir()) == []  # no probe file, no folder created


def test_check_writable_refuses(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    (tmp_path / "a_dir").mkdir()
    with pytest.raises(ConfigError, match="a_file is not a folder"):
        outputs.check_writable(blocker / "out.csv")
    with pytest.raises(ConfigError, match="a_file is not a folder"):
        outputs.check_writable(blocker / "run", is_dir=True)
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        outputs.check_writable(blocker, is_dir=True)
    with pytest.raises(ConfigError, match="a folder of that name exists"):
        outputs.check_writable(tmp_path / "a_dir")
    assert blocker.read_text() == "x"


def test_check_writable_finds_a_folder_it_cannot_write(tmp_path, monkeypatch):
    # root ignores permission bits, so the refusal of the OS is simulated at the probe
    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)
    with pytest.raises(ConfigError, match=f"{tmp_path} is not writable \\(permission denied\\)"):
        outputs.check_writable(tmp_path / "out.csv")


def test_write_json_and_text_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    outputs.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}

    def full_disk(path, text, encoding=None):
        with open(path, "w") as f:
            f.write(text[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.Path, "write_text", full_disk)
    with pytest.raises(OSError) as info:
        outputs.write_json(target, {"b": 2})
    assert outputs.is_disk_full(info.value)
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"a": 1}  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temp file left


def test_staged_dir_moves_on_success_and_removes_on_failure(tmp_path):
    final = tmp_path / "out"
    with outputs.staged_dir(final) as d:
        (d / "a.txt").write_text("1")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "1"

    with pytest.raises(RuntimeError):
        with outputs.staged_dir(final) as d:
            (d / "b.txt").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]  # the old folder untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left

    with outputs.staged_dir(final) as d:  # success replaces the old folder
        (d / "c.txt").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_dir_interrupted_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with outputs.staged_dir(tmp_path / "new") as d:
            (d / "x").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------- interrupt
def test_interrupt_notes_innermost_first_and_read_at_interrupt_time():
    take_notes()
    rows = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_note("continue with: flexbone train --resume runs/x"):
            with interrupt_note(lambda: f"kept {len(rows)} rows in s.csv"):
                rows.extend([1, 2, 3])
                raise KeyboardInterrupt
    assert interrupted_message().splitlines() == [
        "flexbone: interrupted", "flexbone: kept 3 rows in s.csv",
        "flexbone: continue with: flexbone train --resume runs/x"]
    assert take_notes() == []  # printed once


def test_notes_of_blocks_left_normally_are_not_shown():
    take_notes()
    with interrupt_note("finished block"):
        pass
    with pytest.raises(KeyboardInterrupt):
        with interrupt_note("open block") as note:
            note.text = "open block, updated"
            raise KeyboardInterrupt
    assert take_notes() == ["open block, updated"]


def test_cli_main_prints_the_notes(monkeypatch, capsys):
    from flexbone import cli

    def interrupted(args):
        with interrupt_note("kept 2 rows in out.csv; rerun with --resume to continue"):
            raise KeyboardInterrupt

    p = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(p, interrupted))
    assert cli.main(["info", "resnet18"]) == 130
    err = capsys.readouterr().err
    assert err.splitlines() == ["flexbone: interrupted",
                                "flexbone: kept 2 rows in out.csv; rerun with --resume to continue"]
    assert "Traceback" not in err


def _with_func(parser, func):
    original = parser.parse_args

    def parse_args(argv=None):
        args = original(argv)
        args.func = func
        return args

    parser.parse_args = parse_args
    return parser
