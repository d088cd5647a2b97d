"""Writers of hostile and edge-case image files, for any test that must survive real-world collections.

Every `make_*` function writes one small file into `folder` (in milliseconds) and returns its path.
The colours are chosen so a test can tell whether alpha, orientation, frames and bit depth were handled.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, features

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def make_bomb_png(folder: Path, width: int = 20_000, height: int = 20_000, name: str = "bomb.png") -> Path:
    """A 1x1 grey PNG whose IHDR (with a valid CRC) claims width x height: tiny file, huge claimed size."""
    path = Path(folder) / name
    Image.new("L", (1, 1), 128).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def make_gif_frame_bomb(folder: Path) -> Path:
    """A GIF with a 1x1 logical screen whose first frame claims 20000x20000 (Pillow grows the canvas)."""
    path = Path(folder) / "frame_bomb.gif"
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 20_000, 20_000, 0) + b"\x02\x02\x44\x01\x00"
    path.write_bytes(header + frame + b";")
    return path


def make_tiff_claiming(folder: Path, width: int, height: int, name: str = "claims.tif") -> Path:
    """An uncompressed 8-bit grey TIFF whose IFD claims width x height but holds only 16 bytes of pixels."""
    path = Path(folder) / name
    n_entries = 9
    data_offset = 8 + 2 + 12 * n_entries + 4
    entries = [  # (tag, type: 3=SHORT 4=LONG, count, value)
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, data_offset),
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, width * height),
    ]
    ifd = struct.pack("<H", n_entries) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x80" * 16)
    return path


def _noise_jpeg_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    import io

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_truncated_jpeg(folder: Path, name: str = "truncated.jpg") -> Path:
    """A valid JPEG cut off halfway through its scan data (an interrupted copy or download)."""
    path = Path(folder) / name
    data = _noise_jpeg_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_truncated_png(folder: Path) -> Path:
    """A valid PNG cut off halfway through its IDAT chunk."""
    path = Path(folder) / "truncated.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_corrupt_jpeg(folder: Path) -> Path:
    """JPEG magic bytes followed by garbage: sniffed as JPEG, but no decodable header."""
    path = Path(folder) / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(2).bytes(300))
    return path


def make_zero_byte(folder: Path) -> Path:
    """An empty file with an image extension (a failed sync or copy)."""
    path = Path(folder) / "empty.jpg"
    path.write_bytes(b"")
    return path


def make_text_as_jpg(folder: Path) -> Path:
    """A text file wearing a .jpg extension."""
    path = Path(folder) / "notes.jpg"
    path.write_text("This is not an image, it is a note about the painting.\n")
    return path


def make_newline_name(folder: Path) -> Path | None:
    """A truncated JPEG whose file name contains a newline (None where the filesystem refuses it)."""
    try:
        return make_truncated_jpeg(folder, name="bad\nname.jpg")
    except OSError:
        return None


def make_png_as_jpg(folder: Path) -> Path:
    """A red PNG named .jpg: content is sniffed, so it must load."""
    path = Path(folder) / "really_png.jpg"
    Image.new("RGB", (30, 20), RED).save(path, format="PNG")
    return path


def make_palette_alpha_png(folder: Path) -> Path:
    """A red palette PNG whose pixel (0, 0) uses a fully transparent *blue* palette entry."""
    path = Path(folder) / "palette_alpha.png"
    im = Image.new("P", (8, 8), 0)
    im.putpalette([*RED, *BLUE] + [0] * (254 * 3))
    im.putpixel((0, 0), 1)
    im.save(path, transparency=1)
    return path


def make_la_png(folder: Path) -> Path:
    """Grey+alpha PNG: (0,0) black fully transparent, (1,0) black opaque, (2,0) black half transparent."""
    path = Path(folder) / "grey_alpha.png"
    im = Image.new("LA", (4, 2), (0, 255))
    im.putpixel((0, 0), (0, 0))
    im.putpixel((2, 0), (0, 128))
    im.save(path)
    return path


def make_rgba_png(folder: Path) -> Path:
    """RGBA PNG: red opaque, with (0,0) blue fully transparent and (1,0) black half transparent."""
    path = Path(folder) / "rgba.png"
    im = Image.new("RGBA", (4, 2), (*RED, 255))
    im.putpixel((0, 0), (*BLUE, 0))
    im.putpixel((1, 0), (*BLACK, 128))
    im.save(path)
    return path


def make_cmyk_jpeg(folder: Path) -> Path:
    """A print-style CMYK JPEG of pure red (C=0 M=100% Y=100% K=0)."""
    path = Path(folder) / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(path, quality=95)
    return path


def _ramp16() -> np.ndarray:
    """256x4 16-bit ramp: column x holds x*257, i.e. exactly x once scaled to 8 bits."""
    return np.tile((np.arange(256, dtype=np.uint16) * 257), (4, 1))


def make_16bit_png(folder: Path) -> Path:
    """16-bit greyscale PNG ramp from black to white (column x = grey level x in 8 bits)."""
    path = Path(folder) / "grey16.png"
    Image.fromarray(_ramp16()).save(path)
    return path


def make_16bit_tiff(folder: Path) -> Path:
    """16-bit greyscale TIFF ramp, as scanners and museum archives produce."""
    path = Path(folder) / "grey16.tif"
    Image.fromarray(_ramp16()).save(path)
    return path


def make_float_tiff(folder: Path) -> Path:
    """32-bit float TIFF ramp with values 0.0-1.0 (Pillow mode F)."""
    path = Path(folder) / "float.tif"
    Image.fromarray(np.tile(np.linspace(0, 1, 256, dtype=np.float32), (4, 1))).save(path)
    return path


def make_1bit_png(folder: Path) -> Path:
    """1-bit PNG checkerboard of 4x4 cells, black at the top-left."""
    path = Path(folder) / "bilevel.png"
    cells = (np.add.outer(np.arange(16) // 4, np.arange(16) // 4) % 2).astype(bool)
    Image.fromarray(cells).convert("1").save(path)
    return path


def make_exif_rotated_jpeg(folder: Path) -> Path:
    """A 64x32 red JPEG, blue 16x16 top-left, with EXIF Orientation=6: displayed 32x64, blue at top-right."""
    path = Path(folder) / "rotated.jpg"
    im = Image.new("RGB", (64, 32), RED)
    im.paste(BLUE, (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, quality=95, exif=exif.tobytes())
    return path


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), colour) for colour in (RED, (0, 255, 0), BLUE)]


def make_animated_gif(folder: Path) -> Path:
    """Three-frame GIF: red, green, blue."""
    path = Path(folder) / "animated.gif"
    first, *rest = _frames()
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0)
    return path


def make_animated_webp(folder: Path) -> Path | None:
    """Three-frame lossless WebP: red, green, blue (None when Pillow lacks animated WebP)."""
    if not features.check("webp"):
        return None
    path = Path(folder) / "animated.webp"
    first, *rest = _frames()
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0, lossless=True)
    return path


def make_animated_png(folder: Path) -> Path:
    """Three-frame APNG: red, green, blue."""
    path = Path(folder) / "animated.png"
    first, *rest = _frames()
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0)
    return path


def make_hostile_set(folder: Path) -> dict[str, tuple[Path, bool]]:
    """Every case above as name -> (path, should_load); cases the platform cannot write are left out."""
    folder = Path(folder)
    cases = {
        "bomb_png": (make_bomb_png(folder), False),
        "gif_frame_bomb": (make_gif_frame_bomb(folder), False),
        "truncated_jpeg": (make_truncated_jpeg(folder), False),
        "truncated_png": (make_truncated_png(folder), False),
        "corrupt_jpeg": (make_corrupt_jpeg(folder), False),
        "zero_byte": (make_zero_byte(folder), False),
        "text_as_jpg": (make_text_as_jpg(folder), False),
        "newline_name": (make_newline_name(folder), False),
        "png_as_jpg": (make_png_as_jpg(folder), True),
        "palette_alpha_png": (make_palette_alpha_png(folder), True),
        "la_png": (make_la_png(folder), True),
        "rgba_png": (make_rgba_png(folder), True),
        "cmyk_jpeg": (make_cmyk_jpeg(folder), True),
        "png_16bit": (make_16bit_png(folder), True),
        "tiff_16bit": (make_16bit_tiff(folder), True),
        "tiff_float": (make_float_tiff(folder), True),
        "png_1bit": (make_1bit_png(folder), True),
        "exif_rotated_jpeg": (make_exif_rotated_jpeg(folder), True),
        "animated_gif": (make_animated_gif(folder), True),
        "animated_webp": (make_animated_webp(folder), True),
        "animated_png": (make_animated_png(folder), True),
    }
    return {name: (path, ok) for name, (path, ok) in cases.items() if path is not None}
