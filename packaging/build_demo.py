#!/usr/bin/env python3
"""Build the bundled demo collection artannot/resources/demo/ from Debian's openclipart-png package."""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "artannot" / "resources" / "demo"
PACKAGE = "openclipart-png"
PNG_DIR = Path("usr/share/openclipart/png")
DOC_DIR = Path("usr/share/doc") / PACKAGE

# Second-level folders of the package, in label order; the label is the folder's last component.
FOLDERS: tuple[str, ...] = (
    "recreation/games",
    "recreation/holiday",
    "recreation/party",
    "people/smilies",
    "people/stickmen",
    "people/bodypart",
    "transportation/roadsigns",
    "special/patterns",
    "animals/fish",
    "animals/dinosaurs",
)
MAX_PER_LABEL = 32
MIN_PER_LABEL = 15
MAX_SIDE = 256
PALETTE_COLORS = 256


@dataclass(frozen=True)
class Candidate:
    """One PNG entry of the package under a selected folder."""

    label: str
    entry: Path  # path as listed in the package (may be a symlink)
    target: Path  # resolved file inside the extracted package
    pixel_sha: str  # sha256 of the decoded RGBA pixels, used to drop duplicate images


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "source", type=Path, help="openclipart-png .deb file, or the root it was extracted to"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--max-per-label", type=int, default=MAX_PER_LABEL, help="images kept per label")
    parser.add_argument(
        "--max-side", type=int, default=MAX_SIDE, help="longest side in pixels after downscaling"
    )
    return parser.parse_args(argv)


def warn(message: str) -> None:
    """Print a loud warning to stderr."""
    print(f"WARNING: {message}", file=sys.stderr)


def package_version(root: Path, deb: Path | None) -> str:
    """Return the package version from the .deb's control data or the extracted Debian changelog."""
    if deb is not None:
        out = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
        )
        return out.stdout.strip()
    changelog = root / DOC_DIR / "changelog.Debian.gz"
    if changelog.is_file():
        with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as fh:
            match = re.match(r"\S+ \(([^)]+)\)", fh.readline())
        if match:
            return match.group(1)
    return "unknown"


def sanitize(name: str) -> str:
    """Lowercase a file name and replace characters outside [a-z0-9._-] with '_'."""
    return re.sub(r"[^a-z0-9._-]", "_", name.lower())


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pixel_sha(im: Image.Image) -> str:
    """Return the hex sha256 of an image's size and RGBA pixels (ignores encoding and metadata)."""
    rgba = im.convert("RGBA")
    return hashlib.sha256(f"{rgba.width}x{rgba.height}:".encode() + rgba.tobytes()).hexdigest()


def gather(png_root: Path) -> dict[str, list[Candidate]]:
    """List the decodable PNGs under each selected folder, one copy per distinct image across all labels."""
    root = png_root.resolve()
    per_label: dict[str, list[Candidate]] = {}
    for folder in FOLDERS:
        label = Path(folder).name
        base = png_root / folder
        if not base.is_dir():
            warn(f"{folder}: folder missing from the package")
            per_label[label] = []
            continue
        found: list[Candidate] = []
        for entry in sorted(base.rglob("*"), key=lambda p: p.as_posix()):
            if entry.suffix.lower() != ".png" or not entry.is_file():
                continue
            target = entry.resolve()
            if not target.is_relative_to(root):
                continue  # a link leaving the package tree
            image = load(target, PNG_DIR / entry.relative_to(png_root))
            if image is None:
                continue
            found.append(Candidate(label, entry.relative_to(png_root), target, pixel_sha(image)))
        per_label[label] = found

    # An image listed under several labels (the package cross-links files and holds a few identical
    # copies) is kept once: under the label whose folder holds a real copy, else under the first label
    # that lists it.
    owner: dict[str, str] = {}
    for folder in FOLDERS:
        label = Path(folder).name
        for cand in per_label[label]:
            if cand.target.relative_to(root).as_posix().startswith(folder + "/"):
                owner.setdefault(cand.pixel_sha, label)
    for label, cands in per_label.items():
        for cand in cands:
            owner.setdefault(cand.pixel_sha, label)

    result: dict[str, list[Candidate]] = {}
    for label, cands in per_label.items():
        # Within a label prefer the real file over a link to it, then the first path.
        chosen: dict[str, Candidate] = {}
        for cand in sorted(cands, key=lambda c: (c.entry != c.target.relative_to(root), c.entry.as_posix())):
            if owner[cand.pixel_sha] == label:
                chosen.setdefault(cand.pixel_sha, cand)
        result[label] = sorted(chosen.values(), key=lambda c: c.entry.as_posix())
    return result


def load(path: Path, shown: Path | None = None) -> Image.Image | None:
    """Open and fully decode an image, or return None (warning about `shown`, else `path`) if it fails."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as exc:  # any decoding failure (truncated, too large, not a PNG) means "skip it"
        warn(f"skipping {shown or path}: {type(exc).__name__}: {exc}")
        return None


def downscale(im: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longer side is at most max_side (LANCZOS), keeping alpha and the source mode."""
    width, height = im.size
    if max(width, height) <= max_side:
        return im
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if im.mode == "P":
        # Palette images cannot be filtered directly: resample in RGBA, then rebuild a palette with alpha.
        small = im.convert("RGBA").resize(size, Image.Resampling.LANCZOS)
        return small.quantize(PALETTE_COLORS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    if "transparency" in im.info or im.mode not in ("L", "LA", "RGB", "RGBA"):
        # A colour-key transparency would not survive filtering: turn it into a real alpha channel.
        im = im.convert("LA" if im.mode in ("1", "L") else "RGBA")
    return im.resize(size, Image.Resampling.LANCZOS)


def save_png(im: Image.Image, dest: Path) -> None:
    """Save an optimized PNG without metadata other than transparency."""
    params: dict[str, object] = {"optimize": True}
    if "transparency" in im.info:
        params["transparency"] = im.info["transparency"]
    clean = im.copy()
    clean.info = {}
    clean.save(dest, format="PNG", **params)


def unique_name(name: str, taken: set[str]) -> str:
    """Return name, or name with a numeric suffix if already taken."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    candidate, n = name, 2
    while candidate in taken:
        candidate = f"{stem}_{n}.{ext}" if dot else f"{stem}_{n}"
        n += 1
    taken.add(candidate)
    return candidate


def spread(items: list[Candidate], k: int) -> list[Candidate]:
    """Pick up to k items evenly spaced over the sorted list (all of them if there are fewer)."""
    n = len(items)
    if n <= k:
        return items
    return [items[i * n // k] for i in range(k)]


def prepare_out(out: Path) -> None:
    """Delete and recreate the output folder, refusing to wipe a folder this script did not make."""
    if out.exists():
        if any(out.iterdir()) and not (out / "MANIFEST.csv").is_file():
            raise SystemExit(
                f"refusing to delete {out}: not empty and has no MANIFEST.csv from an earlier build"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)


def write_license(
    out: Path, root: Path, version: str, counts: dict[str, int], max_side: int, max_per_label: int
) -> None:
    """Write LICENSE.md: source, public-domain note, the package's copyright file and rebuild steps."""
    copyright_file = root / DOC_DIR / "copyright"
    copyright_text = (
        "\n".join(
            line.rstrip()
            for line in copyright_file.read_text(encoding="utf-8", errors="replace").splitlines()
        )
        if copyright_file.is_file()
        else "(copyright file not found in the package)"
    )
    label_lines = "\n".join(f"- `{label}/`: {n} images" for label, n in counts.items())
    folder_lines = "\n".join(f"- `{PNG_DIR / f}` -> `{Path(f).name}/`" for f in FOLDERS)
    text = f"""# Demo collection: licence and provenance

The images in this folder come from the Debian package **{PACKAGE}**, version **{version}**
(Open Clip Art Library 0.18, <http://www.openclipart.org>). Open Clip Art Library images are
released into the **public domain** by their authors (Creative Commons Public Domain Dedication,
quoted below), so they may be copied, modified and redistributed for any purpose.

The images were downscaled (longest side at most {max_side} px, LANCZOS), re-encoded as optimized PNG
with their alpha channel kept, and renamed to lowercase with characters outside `[a-z0-9._-]`
replaced by `_`. Each image's label is the name of the package folder it was listed in
(the package's own categories, which are noisy). Per folder the script lists the PNGs recursively,
sorted by path, skips files that do not decode, keeps an image listed in several folders only once,
and takes at most {max_per_label} evenly spaced over that sorted list:

{folder_lines}

{label_lines}

`MANIFEST.csv` lists every file with its label, its path inside the package and its sha256.

## Rebuilding

```sh
apt-get download openclipart-png && python packaging/build_demo.py openclipart-png_*.deb
```

The script deletes and recreates `artannot/resources/demo/` and is deterministic for a given package version
and Pillow version.

## The package's copyright file (`/{DOC_DIR}/copyright`)

```text
{copyright_text}
```
"""
    (out / "LICENSE.md").write_text(text, encoding="utf-8")


def build(root: Path, version: str, out: Path, max_per_label: int, max_side: int) -> int:
    """Build the demo folder from an extracted package root; return the number of images written."""
    png_root = root / PNG_DIR
    if not png_root.is_dir():
        raise SystemExit(f"{png_root} not found: is {root} an extracted {PACKAGE} package?")
    candidates = gather(png_root)
    prepare_out(out)

    rows: list[tuple[str, str, str, str]] = []
    counts: dict[str, int] = {}
    for folder in FOLDERS:
        label = Path(folder).name
        usable = candidates[label]
        picked = spread(usable, max_per_label)
        label_dir = out / label
        label_dir.mkdir()
        taken: set[str] = set()
        for cand in picked:
            name = unique_name(sanitize(cand.entry.name), taken)
            dest = label_dir / name
            image = load(cand.target)
            assert image is not None  # it decoded a moment ago
            save_png(downscale(image, max_side), dest)
            rows.append((f"{label}/{name}", label, (PNG_DIR / cand.entry).as_posix(), sha256_file(dest)))
        counts[label] = len(picked)
        print(f"{label:10s} {len(picked):3d} of {len(usable):3d} usable images from {folder}")
        if len(picked) < MIN_PER_LABEL:
            warn(f"!!! label {label!r} has only {len(picked)} usable images (fewer than {MIN_PER_LABEL}) !!!")

    with (out / "MANIFEST.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("path", "label", "source_path", "sha256"))
        writer.writerows(rows)
    write_license(out, root, version, counts, max_side, max_per_label)
    return len(rows)


def from_package(source: Path, build_fn):
    """build_fn(extracted root, package version) on the .deb (extracted to a temporary folder) or on the
    root it was already extracted to; returns what build_fn returns."""
    if not source.exists():
        raise SystemExit(f"{source} does not exist")
    if source.is_file():
        with tempfile.TemporaryDirectory(prefix="openclipart-") as tmp:
            subprocess.run(["dpkg", "-x", str(source), tmp], check=True)
            return build_fn(Path(tmp), package_version(Path(tmp), source))
    return build_fn(source, package_version(source, None))


def main(argv: list[str] | None = None) -> int:
    """Entry point: extract the .deb if given one, then build the demo folder."""
    args = parse_args(argv)
    version, total = from_package(args.source, lambda root, v: (v, build(root, v, args.out, args.max_per_label,
                                                                          args.max_side)))
    print(f"wrote {total} images ({PACKAGE} {version}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
