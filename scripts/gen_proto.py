"""Generate Python stubs (+ .pyi) for every contract under proto/ into zenthor/gen/.

The proto packages are `zenthor.<domain>.v1`, which would collide with the kit package
`zenthor`; generated imports are therefore rewritten to live under `zenthor.gen.`.
`proto/third_party/` (google/api, vendored) is only an include path: its Python modules come
from the googleapis-common-protos wheel.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
THIRD_PARTY_DIR = PROTO_DIR / "third_party"
OUT_DIR = ROOT / "zenthor" / "gen"
IMPORT_RE = re.compile(r"^(from|import) zenthor\.(?!gen\.)", re.MULTILINE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default zenthor/gen)")
    out_dir = parser.parse_args().out.resolve()
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "zenthor").rglob("*.proto"))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    # protoc finds the mypy plugins next to this interpreter (the venv's bin/).
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{THIRD_PARTY_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    for path in out_dir.rglob("*.py*"):
        text = path.read_text()
        fixed = IMPORT_RE.sub(lambda m: f"{m.group(1)} zenthor.gen.zenthor.", text)
        if fixed != text:
            path.write_text(fixed)
    for folder in [out_dir, *(p for p in out_dir.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    print(f"generated {len(protos)} contracts into {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
