"""Import of 10k small images in one pass: seconds and images/s, the no-op re-import, and the checked open;
then a CSV of many label rows (1M by default) imported against the same folder, with its peak memory.

Generates N tiny PNGs (16x16, one folder per class) in a temporary folder, so the figures measure the
importer (scan, probe, hash, batched inserts, labels, split) rather than the disk or the decoder.
The import runs into fresh projects in the same run: probing and hashing on one thread without
thumbnails (the baseline: how it was), on importer.PROBE_WORKERS threads without thumbnails
(`import --no-thumbnails`), and on those threads making each grid thumbnail as well (the default). Beside
them, the thumbnails made afterwards one by one, as a grid without them would make them on first scroll.
`--size 256` makes the decode and hash work real. The CSV import runs in a fresh process (its own peak RSS): its rows name the N files
and then files that are not there (reported as missing, counted, not kept).
Usage: python bench/import_10k.py [--n 10000] [--classes 10] [--size 16] [--csv-rows 1000000] [--keep DIR]
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
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
    ap.add_argument("--csv-rows", type=int, default=1_000_000, help="rows of the labels CSV (0: skip it)")
    ap.add_argument("--csv-phase", nargs=3, metavar=("PROJECT", "IMAGES", "CSV"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.csv_phase:
        csv_phase(*args.csv_phase)
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        t0 = time.perf_counter()
        make_collection(root / "collection", args.n, args.classes, args.size)
        generate_s = time.perf_counter() - t0

        from artannot.data import importer

        workers = importer.PROBE_WORKERS
        importer.PROBE_WORKERS = 1  # the baseline: probe and hash in the importing thread
        with Project.create(root / "serial.artannot") as p:
            t0 = time.perf_counter()
            serial = p.import_folder(root / "collection", labels_from="folder", split="auto", thumbnails=False)
            serial_s = time.perf_counter() - t0
        importer.PROBE_WORKERS = workers
        with Project.create(root / "nothumbs.artannot") as p:
            t0 = time.perf_counter()
            bare = p.import_folder(root / "collection", labels_from="folder", split="auto", thumbnails=False)
            bare_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            made = later_thumbnails(p)
            later_s = time.perf_counter() - t0
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

        csv_out = {}
        if args.csv_rows:
            csv_path = root / "labels.csv"
            files = sorted(p.relative_to(root / "collection").as_posix() for p in (root / "collection").rglob("*.png"))
            with open(csv_path, "w", encoding="utf-8") as fh:
                fh.write("path,label\n")
                for k in range(args.csv_rows):
                    rel = files[k] if k < len(files) else f"elsewhere/img{k:07d}.png"
                    fh.write(f"{rel},class{k % args.classes:02d}\n")
            proc = subprocess.run([sys.executable, __file__, "--csv-phase", str(root / "csv.artannot"),
                                   str(root / "collection"), str(csv_path)], capture_output=True, text=True)
            csv_out = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
            csv_out["csv_mb"] = round(csv_path.stat().st_size / 2**20, 1)
        print(json.dumps({
            "images": args.n, "size_px": args.size, "generate_s": round(generate_s, 2),
            "probe_workers": workers, "serial_import_s": round(serial_s, 2),
            "serial_images_per_s": round(serial.added / serial_s, 1),
            "no_thumbnails_import_s": round(bare_s, 2),
            "no_thumbnails_images_per_s": round(bare.added / bare_s, 1),
            "thumbnails_afterwards_one_thread_s": round(later_s, 2), "thumbnails_afterwards": made,
            "import_s": round(import_s, 2), "images_per_s": round(report.added / import_s, 1),
            "thumbnails_made_at_import": sum(1 for _ in (path.parent / (path.name + ".d") / "thumbs").rglob("*.jpg")),
            "added": report.added, "labelled": report.labelled,
            "reimport_s": round(reimport_s, 2), "reimport_added": again.added,
            "reimport_already_known": again.already_known,
            "open_with_integrity_check_s": round(open_s, 3),
            "project_mb": round(path.stat().st_size / 2**20, 2),
            "csv_import": csv_out,
        }))


def later_thumbnails(p: Project) -> int:
    """Make every image's grid thumbnail one after another, as the grid would without import's; how many."""
    from artannot.data.images import save_thumbnail_cached
    from artannot.data.importer import GRID_THUMB_PX

    rows = p.conn.execute("SELECT s.path, i.path, i.sha256 FROM images i JOIN sources s ON s.id = i.source_id")
    folder = p.cache_dir / "thumbs"
    made = 0
    for source, rel, sha in rows.fetchall():
        save_thumbnail_cached(Path(source) / os.fsdecode(rel), sha, folder, size=GRID_THUMB_PX)
        made += 1
    return made


def csv_phase(project: str, images: str, csv_path: str) -> None:
    """Import a labels CSV into a fresh project (this process only): seconds, peak RSS before and after."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with Project.create(project) as p:
        t0 = time.perf_counter()
        report = p.import_folder(images, labels_from=f"csv:{csv_path}", split="auto")
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"import_s": round(seconds, 1), "added": report.added,
                      "labelled": report.labelled, "peak_rss_mb": round(peak, 1),
                      "rss_mb_before_import": round(before, 1), "summary": report.summary()[:200]}))


if __name__ == "__main__":
    main()
