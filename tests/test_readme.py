"""The README's Python code blocks, run as they are written (a snippet that drifts from the code fails here).

Each ```python block runs top to bottom in a fresh namespace, in a temporary folder, except a block whose
first line is a comment starting with ``# illustrative`` (it names files or objects a reader brings, such as a
Cityscapes checkpoint): that one is compiled, so it stays valid Python, but not run. A line whose comment
names an error (``flexbone.create_model("resnt50")  # UnknownModelError: ...``) must raise that error. The
only things provided are the ones a reader brings: ``resnet50_timm.pth`` (written from timm's resnet50,
the test-only reference) and ``train_loader`` (a few batches of images and labels).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import flexbone

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[tuple[str, str]]:
    """``(heading, code)`` of every ```python block, the heading being the last one above it."""
    blocks, heading, code, inside = [], "", [], False
    for line in README.read_text().splitlines():
        if not inside and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif not inside and line.strip() == "```python":
            inside, code = True, []
        elif inside and line.strip() == "```":
            blocks.append((heading, "\n".join(code)))
            inside = False
        elif inside:
            code.append(line)
    return blocks


_RAISES = re.compile(r"^(?P<indent>\s*)(?P<stmt>[^#]+?)\s*#\s*(?P<error>[A-Z]\w*Error)\b")


def expect_documented_errors(code: str) -> str:
    """Turn ``stmt  # SomeError: ...`` into a check that ``stmt`` raises ``flexbone.SomeError``."""
    out = []
    for line in code.splitlines():
        m = _RAISES.match(line)
        if m is None:
            out.append(line)
            continue
        ind, stmt, error = m["indent"], m["stmt"], m["error"]
        out += [f"{ind}try:", f"{ind}    {stmt}", f"{ind}except flexbone.{error}:", f"{ind}    pass", f"{ind}else:",
                f"{ind}    raise AssertionError({(stmt + ' did not raise ' + error)!r})"]
    return "\n".join(out)


BLOCKS = python_blocks()


def test_the_readme_has_the_blocks_this_test_runs():
    headings = [h for h, _ in BLOCKS]
    assert {"Models", "Checkpoints", "Elastic deployment: once-for-all supernets"} <= set(headings), headings
    illustrative = [h for h, code in BLOCKS if code.lstrip().startswith("# illustrative")]
    assert len(illustrative) <= len(BLOCKS) // 2, illustrative  # most blocks must really run


@pytest.mark.slow
@pytest.mark.parametrize("heading, code", BLOCKS, ids=[h.split(":")[0] for h, _ in BLOCKS])
def test_readme_python_block_runs(heading, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if code.lstrip().startswith("# illustrative"):
        compile(code, f"README.md ({heading})", "exec")
        return
    if "resnet50_timm.pth" in code:
        timm = pytest.importorskip("timm")
        torch.save(timm.create_model("resnet50").state_dict(), tmp_path / "resnet50_timm.pth")
    namespace = {"__name__": "readme",
                 "train_loader": [(torch.randn(4, 3, 128, 128), torch.randint(0, 1000, (4,))) for _ in range(2)]}
    exec(compile(expect_documented_errors(code), f"README.md ({heading})", "exec"), namespace)


def test_save_subnet_of_an_extracted_recalibrated_subnetwork(tmp_path):
    """The README's elastic snippet saves ``sub`` after recalibrating it: the saved network is that one."""
    from flexbone.elastic import load_subnet, recalibrate_bn, save_subnet
    from test_elastic_training import SUPERNET, TOY

    net = flexbone.create_model(SUPERNET, num_classes=10, **TOY)
    sub = net.extract(net.space.sample(0))
    recalibrate_bn(sub, [(torch.randn(8, 3, 32, 32) * 3 + 1, torch.zeros(8, dtype=torch.long))])
    save_subnet(sub, tmp_path / "sub")
    x = torch.randn(2, 3, 32, 32)
    saved, sub = load_subnet(tmp_path / "sub").eval(), sub.eval()
    torch.testing.assert_close(saved(x), sub(x), rtol=0, atol=0)
    # the supernet's own statistics are not what was saved (the point of recalibrating)
    assert not torch.equal(net.extract().eval()(x), saved(x))
    with pytest.raises(flexbone.ConfigError, match="extracted from one"):
        save_subnet(flexbone.create_model("resnet18", num_classes=10), tmp_path / "plain")
