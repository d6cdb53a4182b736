"""scripts/buf_breaking.sh (run by `make lint`) over throwaway git repositories: it finds its
base (main, or main's parent when HEAD is main) and fails on a breaking change only."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
SCRIPT = ROOT / "scripts" / "buf_breaking.sh"

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf is installed by `make setup`")

PROTO = """syntax = "proto3";

package demo.v1;

// A thing.
message Thing {{
  // Its name.
  {name_type} name = 1;{extra}
}}
"""


def git(repo: pathlib.Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def write(repo: pathlib.Path, name_type: str = "string", extra: str = "") -> None:
    path = repo / "proto" / "demo" / "v1" / "thing.proto"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PROTO.format(name_type=name_type, extra=extra))


def commit(repo: pathlib.Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)


@pytest.fixture
def repo(tmp_path: pathlib.Path) -> pathlib.Path:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "buf_breaking.sh")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    write(tmp_path)
    commit(tmp_path, "first")
    return tmp_path


def check(repo: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/buf_breaking.sh"],
        cwd=repo,
        env={**os.environ, "BUF": str(BUF)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_branch_may_add_but_not_retype(repo: pathlib.Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    write(repo, extra="\n  // New.\n  string label = 2;")
    commit(repo, "add a field")
    done = check(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "against main" in done.stdout
    write(repo, name_type="int64")
    done = check(repo)
    assert done.returncode != 0
    assert 'changed type from "string" to "int64"' in done.stdout + done.stderr


def test_on_main_the_newest_commit_is_checked_against_its_parent(repo: pathlib.Path) -> None:
    done = check(repo)  # one commit: nothing to compare with
    assert done.returncode == 0
    assert "skipped" in done.stdout
    write(repo, name_type="int64")
    commit(repo, "break it")
    done = check(repo)
    assert done.returncode != 0
    assert "main~1" in done.stdout
