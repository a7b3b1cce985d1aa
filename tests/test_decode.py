"""decode_image against reference decodes written with numpy (and a hand-made PNG for 16-bit RGB).

Each file is built from known pixel values; the expected RGB is computed here from those values with
the documented rule (high byte of 16-bit values, alpha over white, palette lookup, EXIF rotation),
never read back from decode_image.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from flexbone.data.decode import ImageDecodeError, decode_image
from flexbone.errors import FlexboneError

RNG = np.random.default_rng(0)


def _encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit RGB): filter byte 0 before each row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def _png16(values: np.ndarray, color_type: int) -> bytes:
    h, w = values.shape[:2]
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))
    return _png(w, h, 16, color_type, rows)


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb.astype(np.float64) * a + 255.0 * (1 - a))


def _decoded(data: bytes, **kw) -> np.ndarray:
    image = decode_image(data, **kw)
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int64)


def test_8bit_rgb_and_grey_unchanged():
    rgb = RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_decoded(_encode(Image.fromarray(rgb))), rgb)
    grey = RNG.integers(0, 256, (9, 7), dtype=np.uint8)
    np.testing.assert_array_equal(_decoded(_encode(Image.fromarray(grey))), np.repeat(grey[..., None], 3, -1))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_grey_keeps_the_high_byte(fmt):
    values = RNG.integers(0, 65536, (12, 10), dtype=np.uint16)
    data = _encode(Image.fromarray(values), fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")  # the case convert("RGB") clips to white
    expected = np.repeat((values >> 8)[..., None], 3, -1)
    np.testing.assert_array_equal(_decoded(data), expected)
    # the bug of the issue: PIL's plain conversion makes almost everything white
    assert (np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) == 255).mean() > 0.9


def test_16bit_rgb_png_keeps_the_high_byte():
    values = RNG.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    np.testing.assert_array_equal(_decoded(_png16(values, color_type=2)), values >> 8)


def test_16bit_rgba_png_is_composited_on_white():
    values = RNG.integers(0, 65536, (6, 5, 4), dtype=np.uint16)
    hi = values >> 8
    expected = _over_white(hi[..., :3], hi[..., 3])
    assert np.abs(_decoded(_png16(values, color_type=6)) - expected).max() <= 1


def test_32bit_integer_grey():
    values = RNG.integers(0, 65536, (5, 4)).astype(np.int32)
    np.testing.assert_array_equal(_decoded(_encode(Image.fromarray(values, mode="I"), "TIFF")),
                                  np.repeat((values >> 8)[..., None], 3, -1))
    with pytest.raises(ImageDecodeError, match="outside 0..65535"):
        decode_image(_encode(Image.fromarray(values * 4 - 70000, mode="I"), "TIFF"))


def test_float_grey():
    values = RNG.random((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(_decoded(_encode(Image.fromarray(values, mode="F"), "TIFF")),
                                  np.repeat(np.rint(values * 255)[..., None], 3, -1))
    with pytest.raises(ImageDecodeError, match=r"outside \[0, 1\]"):
        decode_image(_encode(Image.fromarray(values * 300, mode="F"), "TIFF"))


def test_1bit():
    bits = RNG.integers(0, 2, (8, 16)).astype(bool)
    data = _encode(Image.fromarray(bits).convert("1"))
    assert Image.open(io.BytesIO(data)).mode == "1"
    np.testing.assert_array_equal(_decoded(data), np.repeat(bits[..., None] * 255, 3, -1))


def test_palette_with_transparent_index():
    palette = RNG.integers(0, 256, (16, 3), dtype=np.uint8)
    idx = RNG.integers(0, 16, (7, 9), dtype=np.uint8)
    image = Image.fromarray(idx, mode="P")
    image.putpalette(palette.flatten().tolist())
    data = _encode(image, transparency=3)
    expected = palette[idx].astype(np.int64)
    expected[idx == 3] = 255
    np.testing.assert_array_equal(_decoded(data), expected)


def test_palette_with_alpha_table():
    palette = RNG.integers(0, 256, (4, 3), dtype=np.uint8)
    alphas = np.array([0, 80, 200, 255], dtype=np.uint8)
    idx = RNG.integers(0, 4, (6, 6), dtype=np.uint8)
    image = Image.fromarray(idx, mode="P")
    image.putpalette(palette.flatten().tolist())
    data = _encode(image, transparency=bytes(alphas))
    expected = _over_white(palette[idx], alphas[idx])
    assert np.abs(_decoded(data) - expected).max() <= 1


def test_grey_alpha_and_rgba_over_white_or_given_background():
    la = RNG.integers(0, 256, (6, 7, 2), dtype=np.uint8)
    expected = _over_white(np.repeat(la[..., :1], 3, -1), la[..., 1])
    assert np.abs(_decoded(_encode(Image.fromarray(la, mode="LA"))) - expected).max() <= 1
    rgba = RNG.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    expected = _over_white(rgba[..., :3], rgba[..., 3])
    assert np.abs(_decoded(_encode(Image.fromarray(rgba))) - expected).max() <= 1
    a = rgba[..., 3:].astype(np.float64) / 255
    on_black = np.rint(rgba[..., :3] * a)
    assert np.abs(_decoded(_encode(Image.fromarray(rgba)), background=(0, 0, 0)) - on_black).max() <= 1


def test_cmyk():
    cmyk = RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    data = _encode(Image.fromarray(cmyk, mode="CMYK"), "TIFF")
    c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
    expected = (255 - c) * (255 - k) / 255
    assert np.abs(_decoded(data) - expected).max() <= 1


@pytest.mark.parametrize("orientation,fix", [
    (1, lambda a: a),
    (2, lambda a: a[:, ::-1]),
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),  # stored lying on its side: turn 90 degrees clockwise to show
    (8, lambda a: np.rot90(a, 1)),
])
def test_exif_orientation(orientation, fix):
    rgb = RNG.integers(0, 256, (4, 7, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation
    np.testing.assert_array_equal(_decoded(_encode(image, exif=exif.tobytes())), fix(rgb))


def test_multi_frame_gives_the_first_frame():
    frames = [RNG.integers(0, 256, (5, 5, 3), dtype=np.uint8) for _ in range(3)]
    images = [Image.fromarray(f) for f in frames]
    data = _encode(images[0], "TIFF", save_all=True, append_images=images[1:])
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    np.testing.assert_array_equal(_decoded(data), frames[0])


def test_decompression_bomb_refused_before_decoding():
    # a 30000 x 30000 PNG header (900 million pixels) with a few bytes of data: refused at the header
    data = _png(30000, 30000, 1, 0, b"\x00")
    with pytest.raises(ImageDecodeError, match="refused: more than .* pixels"):
        decode_image(data)


def test_image_just_above_the_limit_is_refused_too(monkeypatch):
    # between MAX_IMAGE_PIXELS and twice that PIL only warns; flexbone refuses
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = _encode(Image.new("RGB", (40, 40)))  # 1600 pixels
    with pytest.raises(ImageDecodeError, match="more than 1,000 pixels"):
        decode_image(data)


def test_bad_files_raise_one_line_errors(tmp_path):
    good = _encode(Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.png").write_text("not an image")
    cases = {tmp_path / "cut.png": "cut.png", tmp_path / "text.png": "not an image format",
             tmp_path / "missing.png": "file not found", tmp_path: "is a folder"}
    for path, words in cases.items():
        with pytest.raises(ImageDecodeError, match=words) as info:
            decode_image(path)
        assert "\n" not in str(info.value)
        assert isinstance(info.value, FlexboneError)


def test_path_and_open_file_give_the_same_pixels(tmp_path):
    values = RNG.integers(0, 65536, (6, 6), dtype=np.uint16)
    path = tmp_path / "a.png"
    path.write_bytes(_encode(Image.fromarray(values)))
    with open(path, "rb") as f:
        from_file = np.asarray(decode_image(f))
    np.testing.assert_array_equal(np.asarray(decode_image(path)), from_file)
