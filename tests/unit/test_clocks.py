"""Issue 15: every reading of the wall clock goes through the clock port (``Clock.now``), so
tests can set the time and gauges agree with the rest; the one real clock is
``adapters/clock.py``. The Find My simulator stands apart (it plays Apple, with its own time)."""

from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
ALLOWED = {SRC / "adapters" / "clock.py"}
APART = (SRC / "simulator", SRC / "tracker")
WALL_CLOCKS = {("datetime", "now"), ("datetime", "utcnow"), ("time", "time"), ("date", "today")}


def wall_clock_reads(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) in WALL_CLOCKS
        ):
            found.append(f"{path}:{node.lineno}")
    return found


def test_the_wall_clock_is_read_only_by_the_clock_adapter() -> None:
    files = [
        p
        for p in SRC.rglob("*.py")
        if p not in ALLOWED and not any(p.is_relative_to(d) for d in APART)
    ]
    assert files
    assert [hit for p in files for hit in wall_clock_reads(p)] == []


def test_the_check_finds_a_wall_clock_read(tmp_path: pathlib.Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from datetime import datetime\nstamp = datetime.now()\n")
    assert len(wall_clock_reads(sample)) == 1
