"""Image files to uint8 pixel tensors, exactly as PIL has them (no Flower, no datasets).

JPEGs decode with TorchCodec (libjpeg-turbo, the decoder torchvision 0.29 deprecates
its own for) where it loads, everything else and every fallback with PIL; both
give the same pixels, and grey is PIL's own luma of the RGB pixels, so which path
ran never changes a result.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch


def pil_pixels(images: Iterable[object], mode: str) -> torch.Tensor:
    """The ``N x C x H x W`` uint8 pixels of PIL images, each converted to ``mode``.

    The arrays PIL hands over, stacked once: about 1.6x faster per CIFAR-10 JPEG
    than ``ToTensor`` image by image.
    """
    arrays = [np.asarray(image.convert(mode)) for image in images]
    pixels = torch.from_numpy(np.stack(arrays))
    return pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)


def pil_luma(rgb: torch.Tensor) -> torch.Tensor:
    """The ``N x 1 x H x W`` grey pixels PIL's ``convert("L")`` gives for RGB pixels.

    ITU-R 601-2 luma, ``L = R * 299/1000 + G * 587/1000 + B * 114/1000``, in the
    16-bit fixed point PIL computes it with (libImaging/Convert.c), so the values
    are PIL's to the bit.
    """
    r, g, b = rgb.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(1)


@functools.cache
def _jpeg_decoder() -> Callable[..., list[torch.Tensor]] | None:
    """TorchCodec's batch JPEG decoder, or None where its library does not load."""
    try:
        from torchcodec.decoders import decode_jpeg
    except (ImportError, OSError, RuntimeError) as exc:  # e.g. a build for another torch
        warnings.warn(f"TorchCodec's JPEG decoder did not load ({exc}); decoding JPEGs with "
                      "PIL instead (the same pixels, about 3x slower)", stacklevel=2)
        return None
    return decode_jpeg


def image_file_pixels(paths: Sequence[str], mode: str) -> torch.Tensor:
    """The ``N x C x H x W`` uint8 pixels of image files, as PIL's ``convert(mode)`` has them.

    JPEGs go through TorchCodec (the decoders torchvision 0.29 deprecates its own
    for), about 3x faster than PIL for CIFAR-10's: the same libjpeg-turbo decode,
    so the RGB pixels are PIL's exactly (all 60,000 CIFAR-10 JPEGs compared, and
    progressive, subsampled, grey and CMYK ones in the tests); grey is PIL's luma
    of them. Other formats, or no TorchCodec, go through PIL; so does a batch that
    TorchCodec refuses, so that a broken file's error is PIL's, naming the file
    (TorchCodec's does not say which of the batch it was).
    """
    decode = _jpeg_decoder()
    if decode is None or not all(p.lower().endswith((".jpg", ".jpeg")) for p in paths):
        return pil_pixels(_opened(paths), mode)
    try:
        rgb = torch.stack(decode(list(paths), mode="RGB"))
    except RuntimeError:
        return pil_pixels(_opened(paths), mode)
    return rgb if mode == "RGB" else pil_luma(rgb)


def _opened(paths: Iterable[str]) -> Iterator[object]:
    """Each image file opened with PIL, closed once the next one is asked for."""
    from PIL import Image

    for path in paths:
        with Image.open(path) as image:
            yield image
