"""One image decoder for training, validation and prediction: any file a user's folder can hold, as 8-bit RGB.

``Image.open(f).convert("RGB")`` is wrong for several modes PIL reads: a 16-bit greyscale PNG
(``I;16``) is clipped at 255, so nearly every pixel becomes white; transparency is dropped, so the
colour hidden under fully transparent pixels (often black, sometimes noise) becomes the picture; EXIF
orientation is ignored, so phone photos lie on their side. :func:`decode_image` handles each case:

=====================  =========================================================================
file                   8-bit RGB result
=====================  =========================================================================
RGB, L (8-bit)         as stored (L repeated in the three channels)
1-bit                  0 -> 0, 1 -> 255
16-bit greyscale       the high byte of each value (``v >> 8``), as PIL itself reduces 16-bit RGB
(``I;16*``, ``I``)     PNGs; ``I`` images with values outside 0..65535 are refused
16-bit RGB(A) PNG      PIL keeps the high byte of each channel on reading; alpha as below
float (``F``)          values in [0, 1] scaled by 255 and rounded; other ranges are refused
transparency           P with a transparent index, LA, PA, RGBA, and L/RGB with a ``tRNS`` colour:
                       composited over ``background`` (default white, the page a transparent
                       product photo or drawing is shown on), ``out = a*c + (1-a)*bg``
CMYK                   PIL's conversion, ``R = (255 - C) * (255 - K) / 255`` (no ICC profile applied)
YCbCr and others       PIL's conversion to RGB where it has one; refused otherwise
EXIF orientation       applied (``ImageOps.exif_transpose``) before anything else
several frames         the first frame (GIF, APNG, multi-page TIFF)
=====================  =========================================================================

An image of more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89 million) is refused before it is
decoded (a "decompression bomb" can fill the memory from a file of kilobytes). Every failure raises
:class:`ImageDecodeError` with one line naming the file.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import FlexboneError

__all__ = ["decode_image", "ImageDecodeError", "WHITE"]

WHITE = (255, 255, 255)

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageDecodeError(FlexboneError):
    """A file that is not an image flexbone can decode into RGB (corrupt, truncated, too large, odd mode).

    ``path`` names the file and ``reason`` says what is wrong; the message is ``cannot read image PATH: REASON``.
    """

    def __init__(self, path: str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read image {path}: {reason}")

    def __reduce__(self):  # raised in DataLoader workers: picklable with its two arguments
        return type(self), (self.path, self.reason)


def _name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", "<image>"))


def _composite(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    rgba = image.convert("RGBA")
    # integer form of a*c + (1-a)*bg with a in 0..255, rounded: PIL's alpha_composite does the same
    base = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.uint8), mode="L").convert("RGB")


def _to_rgb(image: Image.Image, background: tuple[int, int, int], name: str) -> Image.Image:
    mode = image.mode
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    if mode in _SIXTEEN_BIT:
        values = np.asarray(image).astype(np.uint32)
        return _gray_to_rgb(values >> 8)
    if mode == "I":  # 32-bit signed: PIL's mode for 16-bit greyscale in some formats (PGM, older PNG readers)
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageDecodeError(name, f"32-bit integer pixels outside 0..65535 "
                                         f"(range {values.min()}..{values.max()}); save it as 8- or 16-bit")
        return _gray_to_rgb(values.astype(np.uint32) >> 8)
    if mode == "F":
        values = np.asarray(image)
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            raise ImageDecodeError(name, "floating-point pixels outside [0, 1]; save it as an 8- or 16-bit image")
        return _gray_to_rgb(np.rint(values * 255.0))
    if has_alpha:
        return _composite(image, background)
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageDecodeError(name, f"pixel mode {mode} has no RGB conversion ({e})") from None


def decode_image(source: str | os.PathLike | BinaryIO | bytes, *,
                 background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Decode ``source`` (a path, an open binary file or bytes) fully into an 8-bit RGB PIL image.

    See the module docstring for what each kind of file becomes. Raises :class:`ImageDecodeError`
    (one line, naming the file) for a missing, corrupt, truncated or oversized image.
    """
    name = _name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise ImageDecodeError(path, "it is a folder")
        if not path.is_file():
            raise ImageDecodeError(path, "file not found")
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # PIL warns above MAX_IMAGE_PIXELS and raises above twice that: refuse both, before decoding
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.seek(0)  # the first frame of an animation or multi-page file
                image = ImageOps.exif_transpose(image)  # decodes fully: a truncated file fails here
                return _to_rgb(image, background, name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(
            name, f"refused: more than {Image.MAX_IMAGE_PIXELS:,} pixels (PIL's limit against decompression "
                  f"bombs); resize it, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from None
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image format PIL knows, or a corrupt file") from None
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, EOFError... on bad files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImageDecodeError(name, reason) from None
