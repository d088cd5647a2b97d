"""Peak memory (of a fresh child process per operation) and time of huge-scan decoding, beside Pillow's.

Writes a generated scan (default 20000×20000 = 400 Mpx PNG, 1.7 MB on disk; --gpx: 40000×25000 = 1 Gpx) once
in a temporary folder, then runs each operation alone in a new interpreter and reports its peak resident
memory (VmHWM of /proc/self/status, else ru_maxrss: Linux carries a parent's ru_maxrss into an exec'd child,
so the scans are written by a child too and the parent stays small), the floor and wall time:

  baseline  python + Pillow + numpy imported, nothing decoded (the floor every row includes)
  pillow    Image.open(...).load(): Pillow's full decode, bomb guard off (what a 100-Mpx-free loader would do)
  pillow-thumbnail  Image.open(...).thumbnail((160, 160)): Pillow's draft (JPEG only) + reduce, bomb guard off
  probe     artannot probe_image: import's validation (every pixel streamed through a shrink)
  thumbnail artannot make_thumbnail(160): the grid's thumbnail
  model     artannot load_image(min_side=448): a model input
  view      artannot load_image(max_side=1600): the viewer's fit-to-window decode
  tile      artannot load_region: one 1024×1024 region at full resolution from the bottom of the image
            (the worst case for a PNG: every row above it is decoded and dropped)

--formats png,tiff,jpeg adds a tiled deflate TIFF and a baseline JPEG of the same pixels (written by pyvips,
tens of seconds each on 2 cores). Prints a table, then JSON.
Usage: python bench/huge_scan_memory.py [--gpx] [--formats png] [--skip-pillow]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.huge import write_flat_png  # noqa: E402

OPS = {
    "baseline": "pass",
    "pillow": "from PIL import Image; Image.MAX_IMAGE_PIXELS = None; im = Image.open(P); im.load()",
    "pillow-thumbnail": "from PIL import Image; Image.MAX_IMAGE_PIXELS = None; im = Image.open(P); "
                        "im.thumbnail((160, 160))",
    "probe": "from artannot.data.images import probe_image; probe_image(P)",
    "thumbnail": "from artannot.data.images import make_thumbnail; make_thumbnail(P, 160)",
    "model": "from artannot.data.images import load_image; load_image(P, min_side=448)",
    "view": "from artannot.data.images import load_image; load_image(P, max_side=1600)",
    "tile": "from artannot.data.images import load_region; "
            "load_region(P, (WIDTH // 2, HEIGHT - 1024, WIDTH // 2 + 1024, HEIGHT))",
}

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy, PIL.Image
P, WIDTH, HEIGHT = {path!r}, {width}, {height}
start = time.perf_counter()
try:
    {op}
    error = None
except Exception as exc:
    error = str(exc)
seconds = time.perf_counter() - start
try:
    with open("/proc/self/status") as status:
        peak = [int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:")][0]
except (OSError, IndexError):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "error": error, "peak_mb": peak}}))
"""


def measure(op: str, path: Path, width: int, height: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    code = CHILD.format(root=str(ROOT), path=str(path), op=OPS[op], width=width, height=height)
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:  # killed (out of memory) or crashed
        return {"seconds": None, "peak_mb": None, "error": f"exit {out.returncode}: {out.stderr.strip()[-200:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_scan(folder: Path, fmt: str, width: int, height: int) -> Path:
    rects = [(0, 0, width, height // 10, (0, 0, 255)), (width * 3 // 5, height * 3 // 4, 64, 64, (255, 0, 0))]
    png = folder / "scan.png"
    if not png.exists():
        write_flat_png(png, width, height, (200, 180, 120), rects)
    if fmt == "png":
        return png
    path = folder / ("scan.tif" if fmt == "tiff" else "scan.jpg")
    save = ("tiffsave(T, tile=True, tile_width=256, tile_height=256, compression='deflate')" if fmt == "tiff"
            else "jpegsave(T, Q=90)")
    subprocess.run([sys.executable, "-c", f"import pyvips; T = {str(path)!r}; "
                    f"pyvips.Image.pngload({str(png)!r}, access='sequential').{save}"], check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpx", action="store_true", help="a 40000×25000 (1 Gpx) scan instead of 400 Mpx")
    parser.add_argument("--formats", default="png", help="comma-separated: png, tiff, jpeg")
    parser.add_argument("--skip-pillow", action="store_true", help="skip Pillow's full decode (needs 3 B/px)")
    args = parser.parse_args()
    width, height = (40_000, 25_000) if args.gpx else (20_000, 20_000)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            start = time.perf_counter()
            path = write_scan(Path(tmp), fmt.strip(), width, height)
            made = time.perf_counter() - start
            print(f"{fmt}: {width}×{height} = {width * height / 1e6:.0f} Mpx, {path.stat().st_size / 1e6:.1f} MB "
                  f"on disk (written in {made:.1f} s); full RGB decode = {3 * width * height / 2**20:.0f} MiB",
                  file=sys.stderr)
            for op in OPS:
                if args.skip_pillow and op.startswith("pillow"):
                    continue
                row = {"format": fmt, "op": op, **measure(op, path, width, height)}
                results.append(row)
                print(f"  {op:17s} peak {row['peak_mb'] or 0:8.0f} MB  {row['seconds'] or 0:7.2f} s"
                      + (f"  ({row['error'][:90]})" if row["error"] else ""), file=sys.stderr)
    floor = {r["format"]: r["peak_mb"] for r in results if r["op"] == "baseline"}
    print(f"\n{'format':7s} {'operation':17s} {'peak MB':>8s} {'over floor':>10s} {'seconds':>8s}")
    for r in results:
        peak = r["peak_mb"]
        over = f"{peak - floor[r['format']]:10.0f}" if peak is not None else f"{'-':>10s}"
        secs = f"{r['seconds']:8.2f}" if r["seconds"] is not None else f"{'-':>8s}"
        print(f"{r['format']:7s} {r['op']:17s} {peak or 0:8.0f} {over} {secs}"
              + (f"  error: {r['error'][:70]}" if r["error"] else ""))
    print(json.dumps({"width": width, "height": height, "results": results}))


if __name__ == "__main__":
    main()
