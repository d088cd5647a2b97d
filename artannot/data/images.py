"""Safe image loading: sniff the content, refuse decompression bombs, decode fully, normalise to RGB.

Every problem a user's file can cause (empty, truncated, not an image, too many pixels) surfaces as an
ImageLoadError whose one-line message names the file and the reason. Nothing here changes Pillow's
global settings (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``) or leaves files open.
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
MAX_PIXELS = 100_000_000
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


def load_image(path: PathArg, *, max_pixels: int = MAX_PIXELS, first_frame: bool = True) -> Image.Image:
    """Fully decoded, upright RGB image, or ImageLoadError; first_frame=False refuses multi-frame files."""
    with _open_checked(path, max_pixels) as (im, label):
        if not first_frame and (n := _frame_count(im, label)) > 1:
            raise ImageLoadError(f"{label} has {n} frames; only single-frame images are accepted here")
        _decode(im, label, max_pixels)
        return _upright_rgb(im, label)


def probe_image(path: PathArg, *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Validate an image at import (header, pixel limit, full decode) and report its displayed size."""
    with _open_checked(path, max_pixels) as (im, label):
        fmt, mode = im.format or "", im.mode
        n_frames = _frame_count(im, label)
        _decode(im, label, max_pixels)
        width, height = im.size
        if _orientation(im) in (5, 6, 7, 8):
            width, height = height, width
        return ImageInfo(width, height, fmt, mode, n_frames)


def make_thumbnail(path: PathArg, size: int = 160, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Upright RGB thumbnail whose longer side is exactly `size`, decoded as cheaply as the format allows."""
    if size < 1:
        raise ValueError(f"thumbnail size must be positive, got {size}")
    with _open_checked(path, max_pixels) as (im, label):
        im.draft("RGB", (size, size))  # JPEG: libjpeg decodes at 1/2..1/8 scale, keeping both sides >= size
        _decode(im, label, max_pixels)
        rgb = _upright_rgb(im, label)
    width, height = rgb.size
    if width >= height:
        target = (size, max(1, round(height * size / width)))
    else:
        target = (max(1, round(width * size / height)), size)
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
            "limit; downscale it before importing"
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
    """Open a file, identify it by content and enforce the pixel limit before any pixel is decoded."""
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
            _check_pixels(im.size, max_pixels, label)
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
    """EXIF orientation (1-8); a corrupt EXIF block counts as upright rather than failing the image."""
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
