"""Test prep for the C++ tests (run by CMake once per build folder; ctest only reads what it writes).

Writes the AOTInductor package of the built-in maefuse-tiny at the sample pairs' size (640x480) and the Python
``Fuser``'s fused outputs (torch backend, the model's own policy) for every sample pair, as PNG files the C++ tests
compare against. Layout: ``REFS/<stem>.png`` is HxWx3 uint8 BGR as cv2.imwrite stores it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maefuse_deploy import Fuser
from maefuse_deploy.export.aoti import export_aoti
from maefuse_deploy.hashing import file_sha256
from maefuse_deploy.io import find_pairs, read_image, write_image
from maefuse_deploy.model.sources import resolve_torch_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=Path, required=True, help="folder with ir/ and vi/ pairs")
    parser.add_argument("--package", type=Path, help="write the .pt2 here")
    parser.add_argument("--refs", type=Path, help="write the Python Fuser's outputs here")
    args = parser.parse_args()
    pairs = find_pairs(args.samples / "ir", args.samples / "vi")
    if not pairs:
        print(f"error: no pairs in {args.samples}", file=sys.stderr)
        return 1
    if args.package:
        resolved = resolve_torch_model(None)
        height, width = read_image(pairs[0].vis, "VIS").shape[:2]
        sha = file_sha256(resolved.path) if resolved.path else ""
        print(f"compiling {resolved.description} for {width}x{height} with AOTInductor (about a minute) ...",
              flush=True)
        report = export_aoti(resolved.model, args.package, (height, width), checkpoint_sha256=sha)
        print(f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB) in {report.seconds:.0f} s")
    if args.refs:
        args.refs.mkdir(parents=True, exist_ok=True)
        with Fuser.from_checkpoint(None, "torch") as fuser:
            listing = []
            for pair in pairs:
                fused = fuser.fuse(read_image(pair.ir, "IR"), read_image(pair.vis, "VIS"))
                write_image(args.refs / f"{pair.name}.png", fused)
                listing.append({"stem": pair.name, "ir": str(pair.ir), "vis": str(pair.vis)})
            (args.refs / "pairs.json").write_text(json.dumps({"policy": fuser.policy, "pairs": listing}, indent=1))
        print(f"wrote {len(pairs)} reference outputs to {args.refs} (policy {fuser.policy})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
