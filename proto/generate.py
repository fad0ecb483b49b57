"""Generate the Python gRPC code in proto/vxlab/v1 from the .proto sources.

Run `python proto/generate.py` after editing a .proto file; `--check` exits 1 when
the committed code differs from what the sources generate (CI runs it via a test).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "vxlab" / "v1"
GENERATED = ("vxlab_pb2.py", "vxlab_pb2.pyi", "vxlab_pb2_grpc.py")


def generate(out: Path) -> None:
    """Run protoc (from grpcio-tools) over every .proto under proto/ into `out`."""
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.glob("*.proto"))
    args = ["protoc", f"-I{ROOT}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def stale_files() -> list[str]:
    """Names of generated files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "vxlab" / "v1"
        return [n for n in GENERATED if not (PACKAGE / n).exists() or not filecmp.cmp(fresh / n, PACKAGE / n, shallow=False)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    if parser.parse_args().check:
        stale = stale_files()
        if stale:
            print(f"stale generated code: {', '.join(stale)}; run python proto/generate.py", file=sys.stderr)
            return 1
        return 0
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
