"""Safe image loading: what a curator depends on when a collection contains hostile or odd files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, JpegImagePlugin

from artannot.data import images
from artannot.data.images import (
    IMAGE_EXTENSIONS,
    ImageInfo,
    is_image_path,
    load_image,
    make_thumbnail,
    probe_image,
    save_thumbnail_cached,
    sha256_file,
    thumbnail_path,
)
from artannot.errors import ImageLoadError
from tests import hostile

# Any warning (Pillow's DecompressionBombWarning, a ResourceWarning for a leaked file handle) is a failure.
pytestmark = pytest.mark.filterwarnings("error")

SHA = "ab" + "0123456789abcdef" * 3 + "0123456789abcd"


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, bool]]:
    return hostile.make_hostile_set(tmp_path_factory.mktemp("hostile"))


def case(cases: dict[str, tuple[Path, bool]], name: str) -> Path:
    if name not in cases:
        pytest.skip(f"{name} cannot be written on this platform")
    return cases[name][0]


def load_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def close_to(pixel: tuple[int, ...], expected: tuple[int, ...], tol: int = 2) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True))


ALL_CASES = [
    "bomb_png", "gif_frame_bomb", "truncated_jpeg", "truncated_png", "corrupt_jpeg", "zero_byte",
    "text_as_jpg", "newline_name", "png_as_jpg", "palette_alpha_png", "la_png", "rgba_png", "cmyk_jpeg",
    "png_16bit", "tiff_16bit", "tiff_float", "png_1bit", "exif_rotated_jpeg", "animated_gif",
    "animated_webp", "animated_png",
]  # fmt: skip


@pytest.mark.parametrize("name", ALL_CASES)
def test_every_case_loads_as_rgb_or_fails_with_a_one_line_message(cases, name):
    path = case(cases, name)
    should_load = cases[name][1]
    if should_load:
        im = load_image(path)
        assert im.mode == "RGB" and im.size[0] > 0 and im.size[1] > 0
        assert isinstance(probe_image(path), ImageInfo)
    else:
        message = load_error(path)
        assert images._label(path) in message
        with pytest.raises(ImageLoadError):
            probe_image(path)
        with pytest.raises(ImageLoadError):
            make_thumbnail(path)


# --- bombs and pixel limits -------------------------------------------------------------------------


def test_bomb_png_is_refused_from_its_header_with_its_size(cases):
    message = load_error(case(cases, "bomb_png"))
    assert "bomb.png" in message and "20000×20000" in message and "400 Mpx" in message
    assert "over the 100 Mpx limit" in message


def test_gif_whose_frame_outgrows_its_screen_is_refused(cases):
    message = load_error(case(cases, "gif_frame_bomb"))
    assert "frame_bomb.gif" in message and "limit" in message


def test_limit_is_per_call(cases):
    path = case(cases, "png_as_jpg")
    assert "limit" in load_error(path, max_pixels=100)
    with pytest.raises(ImageLoadError, match="limit"):
        probe_image(path, max_pixels=100)
    with pytest.raises(ImageLoadError, match="limit"):
        make_thumbnail(path, max_pixels=100)


def test_image_between_pillow_and_our_limit_gives_no_pillow_warning(tmp_path):
    # 95 Mpx is over Pillow's global warning threshold (89.5 Mpx) but within ours; warnings are errors here.
    for path in (
        hostile.make_tiff_claiming(tmp_path, 9500, 10000),
        hostile.make_bomb_png(tmp_path, 9500, 10000),
    ):
        assert "truncated" in load_error(path)  # decoding was attempted, quietly, and failed on the data


def test_our_limit_applies_even_when_pillows_global_is_lower(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # another library lowered it; 100x100 = 10000 px
    for ext in ("png", "gif", "tif"):
        path = tmp_path / f"ok.{ext}"
        Image.new("RGB", (100, 100), hostile.RED).save(path)
        assert load_image(path).size == (100, 100)


def test_pillow_globals_are_left_alone(cases):
    before = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    for path, _ in cases.values():
        with contextlib.suppress(ImageLoadError):
            load_image(path)
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


# --- broken files -----------------------------------------------------------------------------------


def test_truncated_jpeg_is_reported_as_truncated(cases):
    path = case(cases, "truncated_jpeg")
    message = load_error(path)
    assert "truncated.jpg" in message and "truncated" in message.replace("truncated.jpg", "")
    with pytest.raises(ImageLoadError, match="truncated"):
        probe_image(path)  # probing decodes fully, so import catches it


def test_truncated_png_is_reported_as_truncated(cases):
    message = load_error(case(cases, "truncated_png"))
    assert "truncated.png" in message and "truncated or corrupt" in message


def test_jpeg_with_garbage_after_magic_is_corrupt(cases):
    message = load_error(case(cases, "corrupt_jpeg"))
    assert "corrupt.jpg" in message and "corrupt or unsupported" in message


def test_zero_byte_file_is_reported_empty(cases):
    message = load_error(case(cases, "zero_byte"))
    assert "empty.jpg" in message and "is empty (0 bytes)" in message


def test_text_named_jpg_is_not_an_image(cases):
    message = load_error(case(cases, "text_as_jpg"))
    assert "notes.jpg" in message and "is not a JPEG, PNG" in message


def test_newline_in_file_name_keeps_the_message_on_one_line(cases):
    message = load_error(case(cases, "newline_name"))
    assert "bad\\nname.jpg" in message


def test_missing_file_and_folder(tmp_path):
    assert "was not found" in load_error(tmp_path / "gone.jpg")
    folder = tmp_path / "looks_like.jpg"
    folder.mkdir()
    assert "folder" in load_error(folder)


def test_no_file_handle_is_left_open(cases):
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc")
    load_image(case(cases, "png_as_jpg"))  # warm up lazy plugin imports
    before = len(os.listdir(fd_dir))
    for path, _ in cases.values():
        for call in (load_image, probe_image, make_thumbnail):
            with contextlib.suppress(ImageLoadError):
                call(path)
    assert len(os.listdir(fd_dir)) == before


# --- modes, alpha, orientation, frames --------------------------------------------------------------


def test_png_named_jpg_loads_by_content(cases):
    path = case(cases, "png_as_jpg")
    im = load_image(path)
    assert im.size == (30, 20) and im.getpixel((5, 5)) == hostile.RED
    assert probe_image(path).format == "PNG"


def test_transparent_palette_pixel_becomes_white_not_its_palette_colour(cases):
    im = load_image(case(cases, "palette_alpha_png"))
    assert im.getpixel((0, 0)) == hostile.WHITE
    assert im.getpixel((3, 3)) == hostile.RED


def test_grey_alpha_is_composited_on_white(cases):
    im = load_image(case(cases, "la_png"))
    assert im.getpixel((0, 0)) == hostile.WHITE
    assert im.getpixel((1, 0)) == hostile.BLACK
    assert close_to(im.getpixel((2, 0)), (127, 127, 127))


def test_rgba_is_composited_on_white(cases):
    im = load_image(case(cases, "rgba_png"))
    assert im.getpixel((0, 0)) == hostile.WHITE
    assert close_to(im.getpixel((1, 0)), (127, 127, 127))
    assert im.getpixel((3, 1)) == hostile.RED


def test_cmyk_red_stays_red(cases):
    path = case(cases, "cmyk_jpeg")
    r, g, b = load_image(path).getpixel((16, 16))
    assert r > 200 and g < 60 and b < 60
    assert probe_image(path).mode == "CMYK"


def test_cmyk_with_an_unusable_icc_profile_still_converts(tmp_path):
    path = tmp_path / "cmyk_bad_icc.jpg"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # RGB profile on CMYK data
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, icc_profile=srgb)
    r, g, b = load_image(path).getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("name", ["png_16bit", "tiff_16bit"])
def test_16bit_grey_is_scaled_not_clipped(cases, name):
    grey = np.asarray(load_image(case(cases, name)))[0, :, 0].astype(int)
    assert grey[0] == 0 and grey[255] == 255
    assert abs(grey[128] - 128) <= 1  # mid-grey stays mid-grey, not white
    assert np.all(np.abs(grey - np.arange(256)) <= 1)


def test_float_grey_is_scaled(cases):
    grey = np.asarray(load_image(case(cases, "tiff_float")))[0, :, 0].astype(int)
    assert grey[0] == 0 and grey[-1] == 255 and abs(grey[128] - 128) <= 1


def test_1bit_becomes_black_and_white(cases):
    im = load_image(case(cases, "png_1bit"))
    assert im.getpixel((0, 0)) == hostile.BLACK and im.getpixel((5, 0)) == hostile.WHITE


def test_exif_orientation_is_applied(cases):
    path = case(cases, "exif_rotated_jpeg")
    im = load_image(path)
    assert im.size == (32, 64)  # stored wide, shown tall
    assert close_to(im.getpixel((28, 4)), hostile.BLUE, tol=12)  # stored top-left is shown top-right
    assert close_to(im.getpixel((4, 60)), hostile.RED, tol=12)
    info = probe_image(path)
    assert (info.width, info.height) == (32, 64)
    thumb = make_thumbnail(path, 64)
    assert thumb.size == (32, 64) and close_to(thumb.getpixel((28, 4)), hostile.BLUE, tol=20)


@pytest.mark.parametrize("name", ["animated_gif", "animated_webp", "animated_png"])
def test_animation_loads_its_first_frame(cases, name):
    path = case(cases, name)
    assert load_image(path).getpixel((8, 8)) == hostile.RED
    assert probe_image(path).n_frames == 3
    assert make_thumbnail(path, 32).getpixel((16, 16)) == hostile.RED
    assert "3 frames" in load_error(path, first_frame=False)


# --- hashing and discovery --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.JPG", True), ("b.Tiff", True), ("c.webp", True), ("d.jpeg.txt", False), ("README", False),
     ("._a.jpg", False), ("dir/e.GIF", True)],
)  # fmt: skip
def test_is_image_path(name, expected):
    assert is_image_path(name) is expected
    assert is_image_path(Path(name)) is expected


def test_extensions_cover_the_formats_we_decode():
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"} == IMAGE_EXTENSIONS


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    data = os.urandom(10_000)
    path.write_bytes(data)
    assert sha256_file(path, chunk=333) == hashlib.sha256(data).hexdigest()
    with pytest.raises(ImageLoadError, match="not found"):
        sha256_file(tmp_path / "nope.jpg")


# --- thumbnails -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_in", "fmt", "expected"),
    [((2000, 1000), "JPEG", (160, 80)), ((500, 3000), "PNG", (27, 160)), ((40, 30), "PNG", (160, 120)),
     ((160, 160), "JPEG", (160, 160))],
)  # fmt: skip
def test_thumbnail_longer_side_is_size(tmp_path, size_in, fmt, expected):
    path = tmp_path / f"img.{fmt.lower()}"
    Image.new("RGB", size_in, hostile.RED).save(path, format=fmt)
    thumb = make_thumbnail(path)
    assert thumb.mode == "RGB" and thumb.size == expected
    assert close_to(thumb.getpixel((expected[0] // 2, expected[1] // 2)), hostile.RED, tol=6)


def test_thumbnail_asks_jpeg_for_a_reduced_decode(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2000, 1000), hostile.RED).save(path)
    calls = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        calls.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    assert make_thumbnail(path).size == (160, 80)
    assert calls == [(500, 250)]  # libjpeg decoded at 1/4 scale


def test_thumbnail_size_must_be_positive(cases):
    with pytest.raises(ValueError):
        make_thumbnail(case(cases, "png_as_jpg"), 0)


def test_thumbnail_cache_layout_and_reuse(cases, tmp_path, monkeypatch):
    source = case(cases, "png_as_jpg")
    dest = save_thumbnail_cached(source, SHA, tmp_path, 96)
    assert dest == tmp_path / SHA[:2] / f"{SHA}_96.jpg" == thumbnail_path(SHA, tmp_path, 96)
    with Image.open(dest) as im:
        assert im.format == "JPEG" and max(im.size) == 96
    os.utime(dest, ns=(1_000_000_000, 1_000_000_000))
    monkeypatch.setattr(images, "make_thumbnail", lambda *a, **k: pytest.fail("thumbnail was recomputed"))
    assert save_thumbnail_cached(source, SHA.upper(), tmp_path, 96) == dest
    assert dest.stat().st_mtime_ns == 1_000_000_000
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temp files left


def test_thumbnail_is_written_atomically_via_replace_in_the_same_folder(cases, tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        assert Path(src).parent == Path(dst).parent and not Path(dst).exists()
        replaced.append(Path(dst))
        real_replace(src, dst)

    monkeypatch.setattr(images.os, "replace", spy)
    dest = save_thumbnail_cached(case(cases, "png_as_jpg"), SHA, tmp_path)
    assert replaced == [dest] and dest.name == f"{SHA}_160.jpg"


def test_failed_thumbnail_leaves_nothing_behind(cases, tmp_path, monkeypatch):
    with pytest.raises(ImageLoadError):
        save_thumbnail_cached(case(cases, "truncated_jpeg"), SHA, tmp_path)

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\xff\xd8partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_thumbnail_cached(case(cases, "png_as_jpg"), SHA, tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_concurrent_thumbnail_writers_agree(cases, tmp_path):
    source = case(cases, "animated_gif")
    results: list[Path] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(save_thumbnail_cached(source, SHA, tmp_path, 64))
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1
    with Image.open(results[0]) as im:
        assert im.size == (64, 64)
    assert [p.name for p in results[0].parent.iterdir()] == [results[0].name]


def test_bad_hash_is_refused(cases, tmp_path):
    with pytest.raises(ValueError):
        save_thumbnail_cached(case(cases, "png_as_jpg"), "../../etc", tmp_path)


@pytest.mark.parametrize(
    ("values", "expected"), [((0, 32768, 65535), (0, 128, 255)), ((-1000, 0, 1000), (0, 128, 255))]
)
def test_32bit_integer_grey_is_scaled(tmp_path, values, expected):
    path = tmp_path / "int32.tif"
    Image.fromarray(np.array([values], dtype=np.int32)).save(
        path
    )  # mode I, as older Pillow gives 16-bit PNGs
    im = load_image(path)
    assert tuple(im.getpixel((x, 0))[0] for x in range(3)) == expected
