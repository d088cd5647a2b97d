"""Writers of huge (hundreds of megapixels, a gigapixel) yet small PNG files, for tests and benches.

`write_flat_png` streams a PNG of one colour with a few solid rectangles, without ever holding an image: each
distinct row is deflated once, flushed to a byte boundary with a full flush (so the compressed bytes of a row
do not depend on what came before) and repeated. A 400-Mpx file takes about a second and one MB.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

Rect = tuple[int, int, int, int, tuple[int, int, int]]  # x, y, w, h, RGB


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_flat_png(path: Path, width: int, height: int, colour: tuple[int, int, int],
                   rects: Sequence[Rect] = (), *, interlaced: bool = False) -> Path:
    """An 8-bit RGB PNG of `colour` with solid `rects` (later ones on top); `interlaced` only sets the flag
    (the data is not Adam7 — enough for a check that refuses interlaced huge files from the header)."""
    background = bytes(colour) * width

    def row_at(y: int) -> bytes:
        row = bytearray(background)
        for x, top, w, h, fill in rects:
            if top <= y < top + h:
                x0, x1 = max(0, x), min(width, x + w)
                row[3 * x0:3 * x1] = bytes(fill) * (x1 - x0)
        return b"\x00" + bytes(row)  # filter type 0 (none)

    edges = sorted({0, height, *(min(height, max(0, t)) for _, t, _, _, _ in rects),
                    *(min(height, max(0, t + h)) for _, t, _, h, _ in rects)})
    compressor = zlib.compressobj(9)
    adler = 1
    parts: list[bytes] = [compressor.compress(b"")]
    for y0, y1 in zip(edges, edges[1:], strict=False):
        if y1 <= y0:
            continue
        raw = row_at(y0)
        block = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, reused for each identical row
        packed = block.compress(raw) + block.flush(zlib.Z_FULL_FLUSH)
        for _ in range(y1 - y0):
            adler = zlib.adler32(raw, adler)
        parts.append(packed * (y1 - y0))
    final = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts.append(final.flush(zlib.Z_FINISH))  # an empty last block closes the stream
    body = b"\x78\xda" + b"".join(parts[1:]) + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1 if interlaced else 0)
    path = Path(path)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr))
        step = 1 << 20
        for start in range(0, len(body), step):
            out.write(_chunk(b"IDAT", body[start:start + step]))
        out.write(_chunk(b"IEND", b""))
    return path
