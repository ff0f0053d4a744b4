"""Every code block of the README runs, from a fresh directory beside ``../shared``.

- The set-up and test commands are what CI runs (``.ci/run``); of the set-up command, the
  part after the installation (``lsr demo``) is run here.
- The command-line block runs line by line in one shell; every ``lsr`` command in it is also
  parsed by the real argument parser. Lines marked ``# minutes``, ``# runs until stopped``,
  ``# needs the server`` or ``# needs a Ray cluster`` are only parsed (their figures come
  from ``lsr bench`` runs; the Ray commands run in ``tests/distributed``).
- The Python blocks run one after the other in one interpreter.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lsr.service.cli import build_parser
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
NOT_RUN = ("# minutes", "# runs until stopped", "# needs the server", "# needs a Ray cluster")
SET_UP = ("python3 -m venv", ". .venv/bin/activate", "pip install")


def _blocks(language: str) -> list[str]:
    return [text for lang, text in BLOCKS if lang == language]


def _commands(block: str) -> list[str]:
    """The block's commands (continuation lines joined), comment-only lines dropped."""
    text = block.replace("\\\n", " ")
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.fixture
def workdir(tmp_path):
    """A fresh directory beside a ``shared`` link, so ``../shared/...`` resolves as here."""
    (tmp_path / "shared").symlink_to(shared_path())
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    return work


def _env(workdir: Path) -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
        "HF_HUB_OFFLINE": "1",
        "LSR_CACHE": str(workdir / "cache"),
        "LSR_API_KEY": "readme-key",
    }


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(_blocks("bash")) == 3 and len(_blocks("python")) >= 3


def test_set_up_and_test_commands_are_what_ci_runs(workdir):
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    set_up, tests = _blocks("bash")[:2]
    [line] = _commands(set_up)
    steps = [s.strip() for s in line.split("&&")]
    assert "pip install torch==2.13.0" in steps and "pip install --quiet torch==2.13.0" in ci
    assert 'pip install -e ".[dev,distributed]"' in steps
    assert 'pip install --quiet -e ".[dev,distributed]"' in ci
    assert _commands(tests) == [". .venv/bin/activate && python -m pytest"]
    assert "\npython -m pytest\n" in ci
    rest = [s for s in steps if not s.startswith(SET_UP)]
    assert rest == ["lsr demo"]
    done = subprocess.run(rest[0], shell=True, cwd=workdir, env=_env(workdir), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert b"nDCG@10" in done.stdout


@pytest.mark.slow
def test_command_line_block(workdir):
    block = _blocks("bash")[2]
    parser = build_parser()
    runnable = []
    for line in _commands(block):
        command = line.split("  #", 1)[0]
        if command.startswith("lsr "):
            args = (
                parser.parse_args(shlex.split(command)[1:]) if "--version" not in command else None
            )
            assert args is None or callable(args.func), line
        if not any(marker in line for marker in NOT_RUN):
            runnable.append(command)
    assert len(runnable) >= 8
    script = "set -euo pipefail\n" + "\n".join(runnable) + "\n"
    done = subprocess.run(
        ["bash", "-c", script], cwd=workdir, env=_env(workdir), capture_output=True, timeout=900
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = done.stdout.decode()
    assert "indexed 5,183 docs" in out and "sample: 40 queries" in out
    assert (workdir / "reports" / "bm25" / "report.md").is_file()


def test_python_blocks(workdir):
    code = "\n\n".join(_blocks("python"))
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    again = subprocess.run(  # a second run in the same directory works too
        [sys.executable, "-c", code], cwd=workdir, env=_env(workdir), capture_output=True
    )
    assert again.returncode == 0, again.stderr.decode()[-3000:]
