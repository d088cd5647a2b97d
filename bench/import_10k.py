"""Import of 10k small images in one pass: seconds and images/s, the no-op re-import, and the checked open.

Generates N tiny PNGs (16x16, one folder per class) in a temporary folder, so the figures measure the
importer (scan, probe, hash, batched inserts, labels, split) rather than the disk or the decoder.
Usage: python bench/import_10k.py [--n 10000] [--classes 10] [--size 16] [--keep DIR]
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from PIL import Image

from artannot.project import Project
from artannot.store import db


def make_collection(root: Path, n: int, classes: int, size: int) -> None:
    """n distinct tiny PNGs spread over `classes` folders."""
    for k in range(n):
        folder = root / f"class{k % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size), (k % 256, (k // 256) % 256, (k * 7) % 256)).save(folder / f"img{k:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--keep", help="build in this folder and keep it (default: a temporary folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        t0 = time.perf_counter()
        make_collection(root / "collection", args.n, args.classes, args.size)
        generate_s = time.perf_counter() - t0

        path = root / "bench.artannot"
        with Project.create(path) as p:
            t0 = time.perf_counter()
            report = p.import_folder(root / "collection", labels_from="folder", split="auto")
            import_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = p.import_folder(root / "collection", labels_from="folder", split="auto")
            reimport_s = time.perf_counter() - t0
        db._verified.clear()  # time the integrity check a fresh process runs on open
        t0 = time.perf_counter()
        Project(path).close()
        open_s = time.perf_counter() - t0

        print(json.dumps({
            "images": args.n, "size_px": args.size, "generate_s": round(generate_s, 2),
            "import_s": round(import_s, 2), "images_per_s": round(report.added / import_s, 1),
            "added": report.added, "labelled": report.labelled,
            "reimport_s": round(reimport_s, 2), "reimport_added": again.added,
            "reimport_already_known": again.already_known,
            "open_with_integrity_check_s": round(open_s, 3),
            "project_mb": round(path.stat().st_size / 2**20, 2),
        }))


if __name__ == "__main__":
    main()
