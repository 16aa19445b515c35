"""Generate the Python modules of the project's .proto files (run by `make build`).

Each PROTO is compiled with protoc from grpcio-tools into `<name>_pb2.py` and a typed stub
`<name>_pb2.pyi` beside it. Imports are rooted at src/, so a proto under
src/inclavare/<package>/proto/ becomes the module inclavare.<package>.proto.<name>_pb2.
The generated files are not kept in git: they belong to the protoc that made them, which
must not be newer than the protobuf runtime the project pins.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protos", nargs="+", metavar="PROTO")
    args = parser.parse_args()
    try:
        from grpc_tools import protoc
    except ImportError:
        print(
            "gen-protos: grpcio-tools is not installed (pip install -e '.[dev]')", file=sys.stderr
        )
        return 1
    # google/protobuf/*.proto (Timestamp, Any, ...), which `python -m grpc_tools.protoc` adds
    # itself and protoc.main does not
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    for proto in args.protos:
        path = Path(proto).resolve()
        try:
            relative = path.relative_to(SOURCE_ROOT)
        except ValueError:
            print(f"gen-protos: {proto} is not under {SOURCE_ROOT}", file=sys.stderr)
            return 1
        status = protoc.main(
            [
                "protoc",
                f"-I{SOURCE_ROOT}",
                f"-I{well_known}",
                f"--python_out={SOURCE_ROOT}",
                f"--pyi_out={SOURCE_ROOT}",
                str(relative),
            ]
        )
        if status != 0:
            print(f"gen-protos: protoc failed on {proto}", file=sys.stderr)
            return 1
        print(f"generated {relative.with_name(relative.stem + '_pb2.py')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
