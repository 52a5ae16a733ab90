"""Generate Python stubs (+ .pyi) for every contract under proto/ into zenthor/gen/.

The proto packages are `zenthor.<domain>.v1`, which would collide with the kit package
`zenthor`; generated imports are therefore rewritten to live under `zenthor.gen.`.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "zenthor" / "gen"
IMPORT_RE = re.compile(r"^(from|import) zenthor\.(?!gen\.)", re.MULTILINE)


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)
    # protoc finds the mypy plugins next to this interpreter (the venv's bin/).
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={OUT_DIR}",
        f"--grpc_python_out={OUT_DIR}",
        f"--mypy_out={OUT_DIR}",
        f"--mypy_grpc_out={OUT_DIR}",
        *protos,
    ]
    if protoc.main(args) != 0:
        print("protoc failed", file=sys.stderr)
        return 1
    for path in OUT_DIR.rglob("*.py*"):
        text = path.read_text()
        fixed = IMPORT_RE.sub(lambda m: f"{m.group(1)} zenthor.gen.zenthor.", text)
        if fixed != text:
            path.write_text(fixed)
    for folder in [OUT_DIR, *(p for p in OUT_DIR.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    print(f"generated {len(protos)} contracts into {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
