#!/usr/bin/env python3
"""Generates the oomlens.v1 Python modules from ../../proto with grpcio-tools.

Run before using the package (its output is not committed, so it always
matches the contract in this checkout):

    python3 clients/python/generate.py

The modules land in oomlens_client/_generated/ as the package
`oomlens_client._generated.oomlens.v1`.
"""

import pathlib
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "oomlens_client" / "_generated"


def main() -> int:
    try:
        from grpc_tools import protoc
    except ImportError:
        print("error: grpcio-tools is not installed: pip install -r requirements.txt", file=sys.stderr)
        return 1
    # grpc_tools carries google/protobuf/*.proto (Timestamp) beside protoc.
    well_known = pathlib.Path(protoc.__file__).resolve().parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "oomlens" / "v1").glob("*.proto"))
    if not protos:
        print(f"error: no .proto files under {PROTO_ROOT}", file=sys.stderr)
        return 1
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={OUT}",
            f"--grpc_python_out={OUT}",
            *protos,
        ]
    )
    if status != 0:
        print(f"error: protoc failed ({status})", file=sys.stderr)
        return 1
    # The generated modules import `oomlens.v1.x_pb2`: make that a package
    # found through _generated on sys.path (see oomlens_client/__init__.py).
    for package in (OUT / "oomlens", OUT / "oomlens" / "v1"):
        (package / "__init__.py").touch()
    print(f"generated {len(protos)} files into {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
