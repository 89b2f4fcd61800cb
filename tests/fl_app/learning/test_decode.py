"""The decoders: PIL's pixels exactly, whichever decoder runs."""

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpegs_of_every_kind_decode_to_pils_pixels(tmp_path, mode):
    """Progressive, chroma-subsampled, grey and CMYK JPEGs of odd sizes: PIL's pixels exactly."""
    from PIL import Image

    from fl_app.learning.decode import _jpeg_decoder, image_file_pixels

    assert _jpeg_decoder() is not None  # TorchCodec is a dependency: it must load here
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(noise).resize((53, 37), Image.BILINEAR))
    variants = [(Image.fromarray(src), {"subsampling": sub, "progressive": prog, "quality": q})
                for src in (noise, smooth) for sub in (0, 1, 2) for prog in (False, True)
                for q in (50, 95)]
    variants += [(Image.fromarray(noise[..., 1]), {}), (Image.fromarray(noise).convert("CMYK"), {})]
    paths = []
    for k, (image, options) in enumerate(variants):
        paths.append(str(tmp_path / f"{k}.jpg"))
        image.save(paths[-1], **options)
    for path in paths:  # one at a time: a batch must be of one size
        with Image.open(path) as image:
            expected = np.asarray(image.convert(mode))
        got = image_file_pixels([path], mode)[0].permute(1, 2, 0).numpy()
        assert np.array_equal(got.squeeze(-1) if mode == "L" else got, expected), path


def test_a_broken_jpeg_is_named_in_the_error(tmp_path):
    from PIL import Image, UnidentifiedImageError

    from fl_app.learning.decode import image_file_pixels

    good, broken = tmp_path / "good.jpg", tmp_path / "broken.jpg"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(good)
    broken.write_bytes(b"not an image")
    with pytest.raises(UnidentifiedImageError, match=r"broken\.jpg"):
        image_file_pixels([str(good), str(broken)], "RGB")


def test_without_torchcodec_jpegs_decode_with_pil_and_say_so(monkeypatch):
    import sys

    from fl_app.learning import decode

    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # its import now fails
    decode._jpeg_decoder.cache_clear()
    try:
        with pytest.warns(UserWarning, match="decoding JPEGs with PIL"):
            assert decode._jpeg_decoder() is None
    finally:
        decode._jpeg_decoder.cache_clear()


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_batched_pixels_of_any_image_equal_the_per_image_transforms(mode):
    """Grey, RGBA and palette images, in either mode: the per-image transforms' values."""
    from PIL import Image

    from fl_app.learning.data import get_dataset_spec, normalised
    from fl_app.learning.decode import pil_pixels

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    images = [Image.fromarray(rgb), Image.fromarray(rgb[..., 0]),
              Image.fromarray(np.dstack([rgb, rgb[..., :1]])), Image.fromarray(rgb).quantize(16)]
    spec = get_dataset_spec("cifar10" if mode == "RGB" else "mnist")
    from torchvision import transforms

    to_input = transforms.Compose([transforms.ToTensor(),
                                   transforms.Normalize(spec.mean, spec.std)])
    expected = torch.stack([to_input(image.convert(mode)) for image in images])
    assert torch.equal(normalised(spec, pil_pixels(images, mode)), expected)
