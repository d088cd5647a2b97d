"""Safe image loading: sniff the content, refuse decompression bombs, decode fully, normalise to RGB.

Every problem a user's file can cause (empty, truncated, not an image, too many pixels) surfaces as an
ImageLoadError whose one-line message names the file and the reason. Nothing here changes Pillow's
global settings (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``) or leaves files open.

Huge scans. An image whose pixels fit ``max_pixels`` (the memory budget: the most pixels decoded at once)
is decoded whole by Pillow, as ever. A larger one (a museum's 400-Mpx TIFF, a 1-Gpx PNG) is streamed by
libvips (the optional ``pyvips`` package), shrinking on load: a thumbnail, a model-size image
(``load_image(..., min_side=)``), a validation pass at import, or one region at the resolution a zoomed
viewer needs (``load_region``) — never the full resolution at once. Such a decode is refused, with a
one-line message, when what it must hold at once (the output plus the decoder's rows in flight) would not
fit the budget, when the header claims more pixels than can be decoded within ``DECODE_SECONDS``, when a
PNG claims more pixels than its compressed bytes can hold, or when decoding runs past the time budget.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat
import struct
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from artannot.errors import ImageLoadError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MAX_PIXELS = 100_000_000  # memory budget: the most pixels decoded at once (whole by Pillow, or streamed)
DECODE_SECONDS = 120.0  # time budget of one streamed decode (a huge scan streams at 100-400 Mpx/s)
STREAM_PIXELS_PER_S = 50_000_000  # a header claiming more than DECODE_SECONDS of this is refused up front
# Full-width rows a streamed decode holds at once (libvips' line and shrink buffers, two threads), for the
# budget: measured 0.9-1.5k over the interpreter's floor at 20k and 40k px wide (bench/huge_scan_memory.py).
STREAM_ROWS = 1536
# Formats libvips decodes in strips (shrinking on load); others over the budget (WebP, GIF, BMP: decoded
# whole) are refused.
_VIPS_LOADERS = {"PNG": "pngload", "JPEG": "jpegload", "MPO": "jpegload", "TIFF": "tiffload"}
_PNG_MAX_RATIO = 1100  # deflate cannot compress more than ~1032:1, so a PNG claiming more is a bomb
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
# Content is sniffed, never trusted from the extension; only these decoders are ever run (no EPS/PSD/...).
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"
_ORIENTATION = 0x0112
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)
# warnings.catch_warnings() swaps process-wide state; serialise our uses of it.
_WARNINGS_LOCK = threading.RLock()

PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class ImageInfo:
    """What import stores about an image: size as displayed (after EXIF orientation) and its encoding."""

    width: int
    height: int
    format: str
    mode: str
    n_frames: int


def is_image_path(path: PathArg) -> bool:
    """Whether a file looks like an image by its extension; skips macOS '._' resource-fork twins."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("._")


def sha256_file(path: PathArg, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes: the identity that survives renames and moves."""
    digest = hashlib.sha256()
    fp = open_regular(path, _label(path))
    try:
        with fp:
            while block := fp.read(chunk):
                digest.update(block)
    except OSError as exc:
        raise ImageLoadError(_os_error_message(_label(path), exc)) from exc
    return digest.hexdigest()


def not_regular_reason(mode: int) -> str | None:
    """Why a file of this st_mode is not read as an image (None: a regular file)."""
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return what
    return "not a regular file"


def open_regular(path: PathArg, label: str | None = None) -> IO[bytes]:
    """A binary file object of a regular file, or ImageLoadError; never blocks on a pipe or device.

    The file is opened non-blocking (a FIFO or a tty would otherwise wait forever for a writer) and only
    kept when fstat says it is a regular file; reads of a regular file do not care about O_NONBLOCK.
    """
    label = label or _label(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        with contextlib.suppress(OSError):
            why = not_regular_reason(os.stat(path).st_mode)
            if why is not None:
                raise ImageLoadError(f"{label} is {why}, not a regular file; only image files are read") from None
        raise ImageLoadError(_os_error_message(label, exc)) from exc
    try:
        why = not_regular_reason(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise ImageLoadError(_os_error_message(label, exc)) from exc
    if why is not None:
        os.close(fd)
        if why == "a folder":
            raise ImageLoadError(f"{label} is a folder, not an image file")
        raise ImageLoadError(f"{label} is {why}, not a regular file; only image files are read")
    return os.fdopen(fd, "rb")


def load_image(path: PathArg, *, max_pixels: int = MAX_PIXELS, first_frame: bool = True,
               min_side: int | None = None, max_side: int | None = None) -> Image.Image:
    """Fully decoded, upright RGB image, or ImageLoadError; first_frame=False refuses multi-frame files.

    min_side / max_side say what the caller needs at most (a model's input: its shorter side; a view: its
    longer side). An image within max_pixels comes back whole, as without them (callers resize it
    themselves); a huge one is shrunk on load to exactly that (max_side wins), so its full resolution is
    never held. Without them a huge image is refused: its full resolution would not fit the budget.
    `info["source_size"]` of the result is the image's displayed size before any shrinking."""
    with _open_checked(path, max_pixels) as (im, label):
        if not first_frame and (n := _frame_count(im, label)) > 1:
            raise ImageLoadError(f"{label} has {n} frames; only single-frame images are accepted here")
        if _fits(im, max_pixels):
            _decode(im, label, max_pixels)
            rgb = _upright_rgb(im, label)
            source = rgb.size
        else:
            source = _upright_size(im)
            target = _shrunk_size(source, min_side, max_side)
            if target == source:
                _check_pixels(im.size, max_pixels, label)
            rgb = _stream(path, im, label, max_pixels, target)
    rgb.info["source_size"] = source
    return rgb


def load_region(path: PathArg, box: tuple[int, int, int, int], size: tuple[int, int] | None = None, *,
                max_pixels: int = MAX_PIXELS) -> Image.Image:
    """One region (x0, y0, x1, y1 in displayed image pixels, clamped to the image) as upright RGB of `size`
    (default: full resolution): what a zoomed-in viewer shows. A huge image is streamed and only this region
    kept; an ordinary one is decoded whole and cropped."""
    with _open_checked(path, max_pixels) as (im, label):
        whole = None
        if _fits(im, max_pixels):
            _decode(im, label, max_pixels)
            whole = _upright_rgb(im, label)
        width, height = whole.size if whole is not None else _upright_size(im)
        x0, y0 = min(max(0, int(box[0])), width - 1), min(max(0, int(box[1])), height - 1)
        x1, y1 = max(x0 + 1, min(width, int(box[2]))), max(y0 + 1, min(height, int(box[3])))
        out = (max(1, int(size[0])), max(1, int(size[1]))) if size else (x1 - x0, y1 - y0)
        if whole is None:
            return _stream(path, im, label, max_pixels, out, (x0, y0, x1, y1))
    region = whole.crop((x0, y0, x1, y1))
    return region if region.size == out else region.resize(out, Image.Resampling.LANCZOS, reducing_gap=3.0)


def probe_image(path: PathArg, *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Validate an image at import (header, pixel limit, full decode) and report its displayed size.

    A huge image is validated by streaming every pixel through a small shrink (bounded memory)."""
    with _open_checked(path, max_pixels) as (im, label):
        fmt, mode = im.format or "", im.mode
        n_frames = _frame_count(im, label)
        if _fits(im, max_pixels):
            _decode(im, label, max_pixels)
            width, height = _upright_size(im)
        else:
            width, height = _upright_size(im)
            _stream(path, im, label, max_pixels, _shrunk_size((width, height), None, 64))
        return ImageInfo(width, height, fmt, mode, n_frames)


GRID_THUMB_PX = 160  # the grid's thumbnails, as cached on disk (made at import, else when first shown)


def make_thumbnail(path: PathArg, size: int = 160, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Upright RGB thumbnail whose longer side is exactly `size`, decoded as cheaply as the format allows."""
    if size < 1:
        raise ValueError(f"thumbnail size must be positive, got {size}")
    with _open_checked(path, max_pixels) as (im, label):
        if not _fits(im, max_pixels):
            return _stream(path, im, label, max_pixels, _longer_side(_upright_size(im), size))
        im.draft("RGB", (size, size))  # JPEG: libjpeg decodes at 1/2..1/8 scale, keeping both sides >= size
        _decode(im, label, max_pixels)
        rgb = _upright_rgb(im, label)
    width, height = rgb.size
    target = _longer_side(rgb.size, size)
    factor = max(width, height) // (2 * size)
    if factor >= 2:  # cheap box reduction first, so LANCZOS only sees about twice the target size
        rgb = rgb.reduce(factor)
    return rgb.resize(target, Image.Resampling.LANCZOS)


def thumbnail_path(sha256: str, cache_dir: PathArg, size: int = 160) -> Path:
    """Where the cached thumbnail of an image with this content hash lives."""
    sha = sha256.lower()
    if not _SHA256.fullmatch(sha):
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return Path(cache_dir) / sha[:2] / f"{sha}_{size}.jpg"


def save_thumbnail_cached(
    path: PathArg,
    sha256: str,
    cache_dir: PathArg,
    size: int = 160,
    *,
    max_pixels: int = MAX_PIXELS,
) -> Path:
    """Cached thumbnail file for an image, written atomically so readers never see a partial JPEG."""
    dest = thumbnail_path(sha256, cache_dir, size)
    if dest.is_file():
        return dest
    thumb = make_thumbnail(path, size, max_pixels=max_pixels)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            thumb.save(out, format="JPEG", quality=85)
        try:
            os.replace(tmp, dest)
        except PermissionError:  # Windows: another worker's copy is already in place and open
            if not dest.is_file():
                raise
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return dest


# --- internals -------------------------------------------------------------------------------------


def _label(path: PathArg) -> str:
    """The path as one printable line, so a hostile file name cannot break a one-line message."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in os.fspath(path))


def _reason(exc: BaseException) -> str:
    """First line of an exception's text, for embedding in a one-line message."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:.4g}"


def _os_error_message(label: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{label} was not found; was it moved or deleted?"
    if isinstance(exc, PermissionError):
        return f"{label} cannot be read (permission denied); check the file's permissions"
    if isinstance(exc, IsADirectoryError):
        return f"{label} is a folder, not an image file"
    return f"{label} cannot be read ({exc.strerror or _reason(exc)})"


@contextlib.contextmanager
def _pillow_bomb_warning_silenced(active: bool = True) -> Iterator[None]:
    """Mute Pillow's process-wide bomb warning while our own per-call limit is the one in force."""
    if not active:
        yield
        return
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _check_pixels(size: tuple[int, int], max_pixels: int, label: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{label} is {width}×{height} ({_mpx(width * height)} Mpx), over the {_mpx(max_pixels)} Mpx "
            "limit of a full-resolution decode; downscale it"
        )


def _bomb_error(label: str, exc: Image.DecompressionBombError, max_pixels: int) -> ImageLoadError:
    found = re.search(r"\((\d+) pixels\)", str(exc))
    claimed = f"{_mpx(int(found.group(1)))} Mpx" if found else "too many pixels"
    limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
    return ImageLoadError(f"{label} declares {claimed}, over the {_mpx(limit)} Mpx limit; it may be a bomb")


def _identify(fp: IO[bytes], label: str, max_pixels: int) -> ImageFile.ImageFile:
    """Parse the header with the first allowed decoder that accepts the content (Image.open minus its
    global bomb check, which would warn or fail before we know the dimensions)."""
    prefix = fp.read(16)
    Image.init()
    problems: list[str] = []
    for fmt in list(Image.ID):
        if fmt not in ALLOWED_FORMATS or fmt not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[fmt]
        verdict = accept(prefix) if accept else True
        if isinstance(verdict, str):  # recognised, but this Pillow build cannot decode it
            problems.append(verdict)
        elif verdict:
            fp.seek(0)
            try:
                return factory(fp, "")
            except Image.DecompressionBombError as exc:
                raise _bomb_error(label, exc, max_pixels) from exc
            except _DECODE_ERRORS as exc:
                problems.append(f"bad {fmt} header: {_reason(exc)}")
    if problems:
        raise ImageLoadError(f"{label} is corrupt or unsupported ({problems[0]}); re-export or replace it")
    raise ImageLoadError(
        f"{label} is not a {_FORMAT_NAMES} image (content not recognised); convert or remove it"
    )


@contextlib.contextmanager
def _open_checked(path: PathArg, max_pixels: int) -> Iterator[tuple[ImageFile.ImageFile, str]]:
    """Open a file and identify it by content; callers enforce the budgets before any pixel is decoded."""
    label = _label(path)
    fp = open_regular(path, label)
    with fp:
        try:
            if os.fstat(fp.fileno()).st_size == 0:
                raise ImageLoadError(f"{label} is empty (0 bytes); copy it again from the original source")
            with _pillow_bomb_warning_silenced():
                im = _identify(fp, label, max_pixels)
        except OSError as exc:
            raise ImageLoadError(_os_error_message(label, exc)) from exc
        with im:
            yield im, label


def _frame_count(im: ImageFile.ImageFile, label: str) -> int:
    """Number of frames (GIF scans the whole file for it), leaving the image on its current frame."""
    try:
        with _pillow_bomb_warning_silenced():
            return int(getattr(im, "n_frames", 1))  # Pillow seeks back to the current frame
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{label} has a frame that is too large; it may be a bomb") from exc
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(f"{label} is corrupt ({_reason(exc)}); re-export or replace it") from exc


def _decode(im: ImageFile.ImageFile, label: str, max_pixels: int) -> None:
    """Decode every pixel of the current frame now, so truncation is reported here and not later."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        with _pillow_bomb_warning_silenced(
            pillow_limit is not None and im.size[0] * im.size[1] > pillow_limit
        ):
            im.load()
    except Image.DecompressionBombError as exc:
        raise _bomb_error(label, exc, max_pixels) from exc
    except MemoryError as exc:
        raise ImageLoadError(f"{label} is too large to decode in the available memory") from exc
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(
            f"{label} is truncated or corrupt ({_reason(exc)}); re-export or replace it"
        ) from exc
    _check_pixels(im.size, max_pixels, label)  # a GIF frame may have grown the canvas


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1-8); a corrupt EXIF block counts as upright rather than failing the image.

    A PNG not yet decoded whose header chunks hold no EXIF counts as upright: Pillow would decode every
    pixel to look for an EXIF chunk after them (a huge scan's whole resolution)."""
    if im.format == "PNG" and getattr(im, "tile", None) and "exif" not in im.info:
        return 1
    try:
        return int(im.getexif().get(_ORIENTATION, 1))
    except _DECODE_ERRORS:
        return 1


def _upright_rgb(im: Image.Image, label: str) -> Image.Image:
    """Apply EXIF orientation and convert any mode to RGB, as a new image detached from the file."""
    try:
        upright = ImageOps.exif_transpose(im) if _orientation(im) != 1 else im
    except _DECODE_ERRORS:
        upright = im
    try:
        rgb = _to_rgb(upright, label)
    except MemoryError as exc:
        raise ImageLoadError(f"{label} is too large to convert in the available memory") from exc
    return rgb.copy() if rgb is im else rgb


def _to_rgb(im: Image.Image, label: str) -> Image.Image:
    """RGB for every mode we meet: alpha on white, CMYK via its ICC profile, 16-bit/float rescaled."""
    mode = im.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _to_8bit_grey(im).convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(im)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        with contextlib.suppress(ValueError):
            rgba = im.convert("RGBA")
            white = Image.new("RGB", im.size, (255, 255, 255))
            white.paste(rgba, mask=rgba.getchannel("A"))
            return white
    if mode == "RGB":
        return im
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise ImageLoadError(f"{label} uses the {mode} colour mode, which cannot be shown as RGB") from exc


def _to_8bit_grey(im: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit and float greys into 0-255 instead of clipping them (to white)."""
    values = np.asarray(im)
    if values.size == 0:
        return im.convert("L")
    if im.mode.startswith("I;16") or (im.mode == "I" and values.min() >= 0 and values.max() <= 65535):
        return Image.fromarray((values >> 8).astype(np.uint8))  # 16-bit samples; old Pillow says mode I
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if im.mode == "F" and low >= 0 and high <= 1:
        values *= 255.0
    elif high > low:
        values = (values - low) * (255.0 / (high - low))
    else:
        values[...] = 0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """Convert print CMYK through its embedded ICC profile when usable, else Pillow's plain formula."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms
        except ImportError:  # Pillow built without littleCMS
            return im.convert("RGB")
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                im, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            converted = None  # broken or non-CMYK profile
        if converted is not None:
            return converted
    return im.convert("RGB")


# --- huge images: streamed through libvips, shrinking on load ---------------------------------------


def _fits(im: Image.Image, max_pixels: int) -> bool:
    """Whether Pillow may decode the whole image (its pixels fit the memory budget)."""
    return im.size[0] * im.size[1] <= max_pixels


def _upright_size(im: Image.Image) -> tuple[int, int]:
    """The size as displayed, after EXIF orientation."""
    width, height = im.size
    return (height, width) if _orientation(im) in (5, 6, 7, 8) else (width, height)


def _longer_side(size: tuple[int, int], side: int) -> tuple[int, int]:
    """A size scaled so that its longer side is exactly `side`."""
    width, height = size
    if width >= height:
        return side, max(1, round(height * side / width))
    return max(1, round(width * side / height)), side


def _shrunk_size(size: tuple[int, int], min_side: int | None, max_side: int | None) -> tuple[int, int]:
    """The size a caller needs at most: shorter side min_side, longer side max_side (never enlarged)."""
    width, height = size
    scale = 1.0
    if min_side is not None:
        scale = min(scale, max(1, min_side) / max(1, min(width, height)))
    if max_side is not None:
        scale = min(scale, max(1, max_side) / max(1, width, height))
    if scale >= 1.0:
        return size
    return max(1, round(width * scale)), max(1, round(height * scale))


def _source_box(box: tuple[int, int, int, int], orientation: int, size: tuple[int, int]
                ) -> tuple[int, int, int, int]:
    """A box in displayed pixels as the box in the file's own (stored) orientation; size: stored size."""
    x0, y0, x1, y1 = box
    w, h = size
    maps = {2: lambda x, y: (w - x, y), 3: lambda x, y: (w - x, h - y), 4: lambda x, y: (x, h - y),
            5: lambda x, y: (y, x), 6: lambda x, y: (y, h - x), 7: lambda x, y: (w - y, h - x),
            8: lambda x, y: (w - y, x)}
    to_source = maps.get(orientation)
    if to_source is None:
        return box
    xs, ys = zip(*(to_source(x, y) for x, y in ((x0, y0), (x1, y1))), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def _stream_rows(im: ImageFile.ImageFile) -> int:
    """Rows of the full width the decoder holds at once: a TIFF's strip or tile row, else libvips' buffers."""
    if im.format != "TIFF":
        return STREAM_ROWS
    tags = getattr(im, "tag_v2", {})
    tile_rows = tags.get(323)  # TileLength
    rows = int(tile_rows) if tile_rows else int(tags.get(278, im.size[1]) or im.size[1])  # RowsPerStrip
    return STREAM_ROWS + min(rows, im.size[1])


def _whole_decode_reason(im: ImageFile.ImageFile) -> str | None:
    """Why this image's decoder would hold the whole image however little of it is asked for."""
    if im.format == "PNG" and im.info.get("interlace"):
        return "interlaced (Adam7), so it must be decoded whole; save it non-interlaced"
    if im.format in ("JPEG", "MPO") and (im.info.get("progressive") or im.info.get("progression")):
        return "a progressive JPEG, so it must be decoded whole; save it as a baseline JPEG or a TIFF"
    return None


def _png_raw_bytes(path: PathArg, size: tuple[int, int]) -> int:
    """Bytes of a PNG's filtered scanlines, from its IHDR: what its IDAT chunks must inflate to."""
    with open_regular(path) as fp:
        ihdr = fp.read(29)
    if len(ihdr) < 29 or ihdr[12:16] != b"IHDR":
        return 0
    depth, colour_type = ihdr[24], ihdr[25]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour_type, 1)
    width, height = size
    return height * (1 + (width * channels * depth + 7) // 8)


def _check_stream(path: PathArg, im: ImageFile.ImageFile, label: str, max_pixels: int, out_pixels: int,
                  file_size: int) -> None:
    """Refuse a huge image by the budgets before any pixel is decoded (see the module docstring)."""
    width, height = im.size
    pixels = width * height
    shape = f"{width}×{height} ({_mpx(pixels)} Mpx)"
    fmt = im.format or ""
    if fmt not in _VIPS_LOADERS:
        raise ImageLoadError(f"{label} is {shape}, over the {_mpx(max_pixels)} Mpx limit for {fmt} images, "
                             "which are decoded whole; convert it to TIFF or PNG")
    if pixels > DECODE_SECONDS * STREAM_PIXELS_PER_S:
        raise ImageLoadError(f"{label} declares {_mpx(pixels)} Mpx, over the "
                             f"{_mpx(int(DECODE_SECONDS * STREAM_PIXELS_PER_S))} Mpx limit of a "
                             f"{DECODE_SECONDS:g} s decode; it may be a bomb")
    if fmt == "PNG" and _png_raw_bytes(path, im.size) > _PNG_MAX_RATIO * file_size:
        raise ImageLoadError(f"{label} declares {_mpx(pixels)} Mpx in {file_size} bytes, over the limit "
                             f"of PNG compression (about {_PNG_MAX_RATIO}:1); it is truncated or a bomb")
    if (why := _whole_decode_reason(im)) is not None:
        raise ImageLoadError(f"{label} is {shape}, over the {_mpx(max_pixels)} Mpx limit and {why}")
    needed = 2 * out_pixels + width * _stream_rows(im)  # the output, Lanczos' input, the rows in flight
    if needed > max_pixels:
        raise ImageLoadError(f"{label} is {shape}; decoding it needs about {_mpx(needed)} Mpx at once, over "
                             f"the {_mpx(max_pixels)} Mpx limit")


_VIPS: list = []  # the pyvips module, once imported and set up
_VIPS_LOCK = threading.Lock()


def _pyvips(label: str, shape: str, max_pixels: int):
    """pyvips, set up once (no operation cache: nothing decoded or opened outlives a call), or why not."""
    with _VIPS_LOCK:
        if not _VIPS:
            try:
                import pyvips
            except Exception as exc:  # ImportError, or libvips itself missing or broken (OSError, ...)
                raise ImageLoadError(
                    f"{label} is {shape}, over the {_mpx(max_pixels)} Mpx that are decoded whole; reading "
                    f"huge scans needs pyvips ({_reason(exc)}): pip install pyvips pyvips-binary"
                ) from exc
            pyvips.cache_set_max(0)
            _VIPS.append(pyvips)
        return _VIPS[0]


def _stream(path: PathArg, im: ImageFile.ImageFile, label: str, max_pixels: int, out: tuple[int, int],
            box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """A huge image (or one displayed-pixel box of it) streamed by libvips, shrunk on load to `out`."""
    orientation = _orientation(im)
    width, height = im.size  # as stored
    try:
        file_size = os.stat(path).st_size
    except OSError as exc:
        raise ImageLoadError(_os_error_message(label, exc)) from exc
    _check_stream(path, im, label, max_pixels, out[0] * out[1], file_size)
    vips = _pyvips(label, f"{width}×{height} ({_mpx(width * height)} Mpx)", max_pixels)
    src_box = _source_box(box or (0, 0, *_upright_size(im)), orientation, (width, height))
    out_src = (out[1], out[0]) if orientation in (5, 6, 7, 8) else out  # output size as stored
    crop_w, crop_h = src_box[2] - src_box[0], src_box[3] - src_box[1]
    loader = _VIPS_LOADERS[im.format or ""]
    options: dict[str, object] = {"fail_on": "error",
                                  "access": "random" if loader == "tiffload" and box else "sequential"}
    shrink = 1
    if loader == "jpegload":  # libjpeg's DCT scaling: decode at 1/2..1/8, keeping at least the output size
        while shrink < 8 and crop_w // (2 * shrink) >= out_src[0] and crop_h // (2 * shrink) >= out_src[1]:
            shrink *= 2
        options["shrink"] = shrink
    kill = None
    try:
        source = getattr(vips.Image, loader)(os.fspath(path), **options)
        image = source
        if shrink > 1 or box is not None:
            x0, y0 = src_box[0] // shrink, src_box[1] // shrink
            cw = max(1, min(image.width - x0, -(-crop_w // shrink)))
            ch = max(1, min(image.height - y0, -(-crop_h // shrink)))
            if (x0, y0, cw, ch) != (0, 0, image.width, image.height):
                image = image.crop(x0, y0, cw, ch)
        image = _vips_rgb(vips, image)
        if (image.width, image.height) != out_src:
            # box-average by whole factors first (few rows in flight), so Lanczos sees about twice the output
            ky, kx = max(1, image.height // (2 * out_src[1])), max(1, image.width // (2 * out_src[0]))
            if ky > 1:
                image = image.shrinkv(ky)
            if kx > 1:
                image = image.shrinkh(kx)
            image = image.resize(out_src[0] / image.width, vscale=out_src[1] / image.height)
            if (image.width, image.height) != out_src:  # rounding: pad or trim the last row or column
                image = image.gravity("north-west", out_src[0], out_src[1], extend="copy")
        kill = threading.Timer(DECODE_SECONDS, source.set_kill, (True,))
        kill.daemon = True
        kill.start()
        data = image.write_to_memory()
    except vips.Error as exc:
        detail = " ".join(str(exc).split())
        if "killed" in detail:
            raise ImageLoadError(f"{label} took over the {DECODE_SECONDS:g} s limit of a decode; "
                                 "it may be a bomb") from None
        if "out of memory" in detail.lower():
            raise ImageLoadError(f"{label} is too large to decode in the available memory") from None
        reason = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else "decode failed"
        raise ImageLoadError(f"{label} is truncated or corrupt ({reason}); re-export or replace it") from None
    except MemoryError as exc:
        raise ImageLoadError(f"{label} is too large to decode in the available memory") from exc
    finally:
        if kill is not None:
            kill.cancel()
    rgb = Image.frombytes("RGB", out_src, data)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    return rgb


def _vips_rgb(vips, image):
    """8-bit sRGB of any libvips image we load: alpha on white, CMYK via its profile, 16-bit scaled down."""
    if image.hasalpha():
        white = 65535 if image.format == "ushort" else 255
        image = image.flatten(background=[white] * (image.bands - 1))
    if image.interpretation == "cmyk" or image.bands == 4:
        try:
            image = image.icc_transform("srgb", embedded=True, input_profile="cmyk")
        except vips.Error:
            image = image.colourspace("srgb")
    if image.format == "ushort":
        image = image >> 8
    elif image.format in ("float", "double") and image.interpretation not in ("grey16", "rgb16"):
        image = image * 255  # float samples are 0-1 (scanners, HDR tools); clipped below
    if image.format != "uchar":
        image = image.cast("uchar")
    if image.bands == 1:
        image = image.bandjoin([image, image])
    elif image.bands == 2:  # two bands without alpha: keep the first as grey
        image = image[0].bandjoin([image[0], image[0]])
    elif image.bands > 3:
        image = image.extract_band(0, n=3)
    return image
