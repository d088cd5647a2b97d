"""Huge scans: a 400-Mpx image is imported, thumbnailed, fed to the model and viewed at full resolution
in bounded memory, while a bomb is still refused (by the memory and time budgets) with one line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from artannot.data import images
from artannot.data.images import ImageLoadError, load_image, load_region, make_thumbnail, probe_image
from tests import hostile
from tests.huge import write_flat_png

pytest.importorskip("pyvips")

W, H = 20_000, 20_000  # 400 Mpx: 1.2 GB decoded, 1.7 MB on disk
BACKGROUND = (200, 180, 120)
RED, BLUE = (255, 0, 0), (0, 0, 255)
PATCH = (12_000, 15_000, 64, 64, RED)  # a small red square far down the image
BAND = (0, 0, W, 2_000, BLUE)  # a blue band across the top tenth


@pytest.fixture(scope="session")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("huge") / "museum" / "maps"
    folder.mkdir(parents=True)
    return write_flat_png(folder / "scan.png", W, H, BACKGROUND, [BAND, PATCH])


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(ImageLoadError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def peak_rss_mb(code: str) -> dict:
    """Run code in a fresh interpreter; its JSON result plus its peak resident memory (MB)."""
    script = textwrap.dedent(f"""
        import json, resource, sys
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        result = {{}}
        {textwrap.indent(textwrap.dedent(code), "        ").strip()}
        # VmHWM starts afresh at exec; ru_maxrss keeps the forking parent's (pytest's) peak across it
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
        result["peak_mb"] = (int(hwm[0].split()[1]) if hwm else
                             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
        print(json.dumps(result))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "VIPS_CONCURRENCY": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_import_of_a_400_mpx_png_stores_its_size_and_makes_a_thumbnail(scan, tmp_path):
    from artannot.project import Project

    with Project.create(tmp_path / "p.artannot") as p:
        report = p.import_folder(scan.parents[1])
        assert report.added == 1 and not report.failed
        (row,) = p.images()
        assert (row.width, row.height) == (W, H)
    thumb = images.save_thumbnail_cached(scan, row.sha256, tmp_path / "thumbs", 160)  # the grid's
    with Image.open(thumb) as im:
        assert im.size == (160, 160)
        top, bottom = im.convert("RGB").getpixel((80, 4)), im.convert("RGB").getpixel((80, 120))
    assert max(abs(a - b) for a, b in zip(top, BLUE, strict=True)) < 12
    assert max(abs(a - b) for a, b in zip(bottom, BACKGROUND, strict=True)) < 12


@pytest.mark.slow
def test_a_model_size_load_shrinks_on_load_and_never_holds_the_full_resolution(scan):
    picture = load_image(scan, min_side=448)
    assert picture.size == (448, 448) and picture.mode == "RGB"
    assert picture.info["source_size"] == (W, H)
    assert picture.getpixel((224, 10)) == BLUE and picture.getpixel((224, 300)) == BACKGROUND
    # The whole image decoded would be 1200 MB; the child's peak (interpreter, Pillow, libvips) stays far below.
    result = peak_rss_mb(f"""
        from artannot.data.images import load_image
        result["size"] = load_image({str(scan)!r}, min_side=448).size
    """)
    assert result["size"] == [448, 448]
    assert result["peak_mb"] < 400, result


def test_the_detector_input_is_scaled_from_the_scans_own_size(scan):
    from artannot.ml.detect.data import load_scaled

    tensor, scale = load_scaled(scan, 448, 800)
    assert tuple(tensor.shape) == (3, 448, 448) and scale == pytest.approx(448 / W)  # boxes stay in image px
    band, below = tensor[:, round(BAND[3] * scale) - 5, 224], tensor[:, round(BAND[3] * scale) + 5, 224]
    assert band.tolist() == pytest.approx([0, 0, 1], abs=0.02)  # the blue band ends where it should
    assert below.tolist() == pytest.approx([c / 255 for c in BACKGROUND], abs=0.02)


def test_an_ordinary_image_comes_back_whole_whatever_the_size_hint(tmp_path):
    path = tmp_path / "photo.png"
    _pattern(600, 400).save(path)
    for hint in ({"min_side": 100}, {"max_side": 100}, {}):
        picture = load_image(path, **hint)  # Pillow's path, unchanged: callers resize it themselves
        assert picture.size == (600, 400) and picture.info["source_size"] == (600, 400)
        assert np.array_equal(np.asarray(picture), np.asarray(_pattern(600, 400)))


def test_full_resolution_of_a_huge_scan_is_refused_by_the_memory_budget(scan):
    message = one_line_error(load_image, scan)
    assert "scan.png" in message and "20000×20000" in message and "over the 100 Mpx limit" in message
    assert "needs about" in one_line_error(load_region, scan, (0, 0, W, H))  # a full-resolution region too


def test_a_region_comes_back_at_full_resolution(scan):
    x, y = PATCH[0], PATCH[1]
    region = load_region(scan, (x - 10, y - 10, x + 100, y + 90))
    assert region.size == (110, 100)
    arr = np.asarray(region)
    assert tuple(arr[10, 10]) == RED and tuple(arr[10, 9]) == BACKGROUND and tuple(arr[9, 10]) == BACKGROUND
    assert tuple(arr[73, 73]) == RED and tuple(arr[74, 74]) == BACKGROUND  # 64 px square, sharp edges
    half = load_region(scan, (x - 10, y - 10, x + 100, y + 90), (55, 50))
    assert half.size == (55, 50) and half.getpixel((20, 20)) == RED


def test_header_claiming_100_gpx_is_refused_as_a_bomb(tmp_path):
    path = hostile.make_bomb_png(tmp_path, 316_228, 316_228, "claims.png")
    for call in (probe_image, make_thumbnail):
        message = one_line_error(call, path)
        assert "claims.png" in message and "declares" in message and "it may be a bomb" in message


def test_png_claiming_more_pixels_than_its_bytes_can_hold_is_refused_before_decoding(tmp_path):
    message = one_line_error(probe_image, hostile.make_bomb_png(tmp_path, 20_000, 20_000, "tiny.png"))
    assert "declares 400 Mpx in" in message and "bomb" in message


def test_a_decode_past_the_time_budget_is_killed_with_one_line(scan, monkeypatch):
    monkeypatch.setattr(images, "DECODE_SECONDS", 0.001)
    monkeypatch.setattr(images, "STREAM_PIXELS_PER_S", 10**15)  # pass the check on the header
    message = one_line_error(probe_image, scan)
    assert "scan.png" in message and "limit of a decode" in message and "bomb" in message


def test_interlaced_huge_png_is_refused_since_it_decodes_whole(tmp_path):
    path = write_flat_png(tmp_path / "adam7.png", 1000, 800, BACKGROUND, interlaced=True)
    message = one_line_error(make_thumbnail, path, max_pixels=500_000)
    assert "interlaced" in message and "limit" in message


def test_progressive_jpeg_over_the_budget_is_refused_since_it_decodes_whole(tmp_path):
    path = tmp_path / "progressive.jpg"
    _pattern(1000, 800).save(path, progressive=True)
    assert "progressive JPEG" in one_line_error(make_thumbnail, path, max_pixels=500_000)
    assert make_thumbnail(path).size == (160, 128)  # within the budget: Pillow decodes it as ever


def test_a_file_name_is_never_read_as_libvips_options(tmp_path):
    path = tmp_path / "scan[shrink=8,page=2].png"  # new_from_file would parse the brackets as load options
    _pattern(300, 2000).save(path)
    thumb = make_thumbnail(path, 90, max_pixels=560_000)
    assert thumb.size == (14, 90)
    assert np.abs(np.asarray(thumb, int) - np.asarray(make_thumbnail(path, 90), int)).mean() < 6


def test_bmp_over_the_budget_is_refused_with_the_formats_to_use(tmp_path):
    path = tmp_path / "big.bmp"
    Image.new("RGB", (1000, 800), RED).save(path)
    assert "convert it to TIFF or PNG" in one_line_error(make_thumbnail, path, max_pixels=500_000)


# --- the streamed path on small files (a budget lowered below their size) agrees with Pillow's ---------


def _pattern(width: int, height: int) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width]
    arr = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx // 50 + yy // 50) % 2) * 255], -1)
    return Image.fromarray(arr.astype(np.uint8))


@pytest.mark.parametrize("kind", ["jpeg_rotated", "tiff_tiled", "png_16bit", "png_rgba"])
def test_streamed_decode_matches_the_whole_decode(tmp_path, kind):
    picture = _pattern(300, 2000)  # 0.6 Mpx; the streamed path holds 300 px × 1.5-1.7k rows at once
    path = tmp_path / f"{kind}.{'jpg' if kind.startswith('jpeg') else 'tif' if 'tiff' in kind else 'png'}"
    if kind == "jpeg_rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # displayed rotated 90° clockwise: 2000 × 300
        picture.save(path, quality=95, exif=exif)
    elif kind == "tiff_tiled":
        picture.save(path, tile=(128, 128), compression="tiff_adobe_deflate")
    elif kind == "png_16bit":
        Image.fromarray(np.asarray(picture)[..., 0].astype(np.uint16) * 257).save(path)
    else:
        rgba = picture.convert("RGBA")
        rgba.putalpha(Image.new("L", picture.size, 255))
        rgba.paste((0, 0, 0, 0), (0, 0, 100, 100))  # transparent corner: white, like Pillow's path
        rgba.save(path)
    small = 560_000  # under the 600 000 pixels: the streamed path
    whole = load_image(path)
    assert probe_image(path, max_pixels=small) == probe_image(path)
    shrunk = load_image(path, max_pixels=small, max_side=200)
    assert shrunk.info["source_size"] == whole.size
    reference = whole.resize(shrunk.size, Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(shrunk, int) - np.asarray(reference, int)).mean() < 6
    box = (50, 100, 150, 250)  # inside both the upright and the rotated picture
    streamed, pillow = load_region(path, box, max_pixels=small), load_region(path, box)
    assert streamed.size == pillow.size == (100, 150)
    assert np.abs(np.asarray(streamed, int) - np.asarray(pillow, int)).mean() < 3


def test_without_pyvips_a_huge_image_says_what_to_install(scan, monkeypatch):
    monkeypatch.setattr(images, "_VIPS", [])
    monkeypatch.setitem(sys.modules, "pyvips", None)  # import pyvips raises ImportError
    message = one_line_error(make_thumbnail, scan)
    assert "scan.png" in message and "pip install pyvips pyvips-binary" in message
    ordinary = scan.parent.parent / "ordinary.png"
    Image.new("RGB", (30, 20), RED).save(ordinary)
    assert make_thumbnail(ordinary, 60).getpixel((30, 20)) == RED  # Pillow's path needs no pyvips


# --- the viewer --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_viewer_shows_the_zoomed_region_of_a_huge_scan_at_full_resolution(qtbot, scan):
    from PySide6.QtCore import QPointF
    from PySide6.QtWidgets import QGraphicsPixmapItem

    from artannot.gui.image_viewer import MAX_VIEW_PX, ImageViewer
    from artannot.store.repo import ImageRow

    viewer = ImageViewer()
    qtbot.addWidget(viewer)
    viewer.resize(700, 600)
    viewer.show()
    row = ImageRow(1, str(scan), "0" * 64, W, H, "train", None, None, None, None)
    viewer.show_image(row)
    qtbot.waitUntil(viewer.image_ready, timeout=60_000)
    editor = viewer.editor
    (shown,) = [item for item in editor.items() if isinstance(item, QGraphicsPixmapItem)]
    assert max(shown.pixmap().size().toTuple()) <= MAX_VIEW_PX  # the fit shows a shrunk decode
    assert viewer.detail_shown() is None
    centre = QPointF(PATCH[0] + 32, PATCH[1] + 32)
    editor.zoom(1.0 / editor.zoom_level())  # 1 screen pixel per image pixel
    editor.centerOn(centre)
    editor.check_detail()
    qtbot.waitUntil(lambda: viewer.detail_shown() is not None, timeout=60_000)
    rect, scale = viewer.detail_shown()
    assert scale == 1.0 and rect.contains(centre) and rect.width() * rect.height() < 4e6
    shot = editor.viewport().grab().toImage()
    inside = editor.mapFromScene(QPointF(PATCH[0] + 3, PATCH[1] + 32))
    outside = editor.mapFromScene(QPointF(PATCH[0] - 3, PATCH[1] + 32))
    assert shot.pixelColor(inside).getRgb()[:3] == RED  # sharp at the patch's edge: full resolution
    assert shot.pixelColor(outside).getRgb()[:3] == BACKGROUND
    editor.fit()
    editor.check_detail()
    assert viewer.detail_shown() is None  # fitted again: the shrunk decode suffices
    viewer.shutdown()


@pytest.mark.slow
def test_region_decodes_the_view_has_moved_past_are_skipped_before_they_start(qtbot, scan):
    from artannot.gui.image_viewer import ImageCache

    cache = ImageCache(threads=1)
    done: list = []
    cache.region_ready.connect(done.append)
    keys = [(str(scan), (x, H - 300, x + 200, H - 100), (200, 200)) for x in (1000, 5000, 9000)]
    for key in keys:  # the first runs (every row above it is decoded: seconds), the second waits, the third
        cache.request_region(key)  # takes its place
    qtbot.waitUntil(lambda: keys[2] in done, timeout=60_000)
    assert keys[1] not in done and cache.region(keys[1]) is None
    assert cache.region(keys[2]).size().toTuple() == (200, 200)
    cache.shutdown()
