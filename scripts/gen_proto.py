"""Generate the Python protobuf/gRPC code from proto/ into src/tracker (ignored by git), and
``src/tracker/descriptor_set.binpb``: every file's descriptor WITH its source info (the
comments), which server reflection serves (adapters/grpc/reflection.py)."""

from __future__ import annotations

import pathlib
import shutil
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "src"
DESCRIPTOR_SET = OUT / "tracker" / "descriptor_set.binpb"


def main() -> int:
    shutil.rmtree(OUT / "tracker", ignore_errors=True)
    DESCRIPTOR_SET.parent.mkdir(parents=True)
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO}",
            f"-I{include}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            f"--descriptor_set_out={DESCRIPTOR_SET}",
            "--include_source_info",
            "--include_imports",
            *files,
        ]
    )
    if rc != 0:
        return rc
    for pkg in {(OUT / f).parent for f in files} | {OUT / "tracker"}:
        (pkg / "__init__.py").touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
