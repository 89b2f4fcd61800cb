"""The on-disk pixel cache: an entry is named by its files, and a refusing disk costs nothing."""

import os

import torch

from fl_app.learning import pixel_cache


def test_an_entry_is_named_by_its_files_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("FL_APP_CACHE_DIR", str(tmp_path / "cache"))
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    key = pixel_cache.cache_file("cifar10", "train", [str(a), str(b)])
    assert key.parent == tmp_path / "cache" and key.name.startswith("cifar10-train-pixels-")
    assert pixel_cache.cache_file("cifar10", "train", [str(a), str(b)]) == key
    assert pixel_cache.cache_file("cifar10", "train", [str(b), str(a)]) != key  # order
    assert pixel_cache.cache_file("cifar10", "test", [str(a), str(b)]) != key  # split
    b.write_bytes(b"22")  # replaced with another image: the old entry is not read
    assert pixel_cache.cache_file("cifar10", "train", [str(a), str(b)]) != key
    monkeypatch.setenv("FL_APP_CACHE_DIR", "off")
    assert pixel_cache.cache_file("cifar10", "train", [str(a)]) is None


def test_written_pixels_read_back_only_as_asked(tmp_path):
    pixels = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    entry = tmp_path / "sub" / "entry.npy"
    pixel_cache.write_cached(entry, pixels)
    assert torch.equal(pixel_cache.read_cached(entry, (2, 3, 4, 4)), pixels)
    assert pixel_cache.read_cached(entry, (2, 1, 4, 4)) is None  # another shape: not this
    assert os.listdir(entry.parent) == ["entry.npy"]  # no temporary file left
    entry.write_bytes(b"truncated")
    assert pixel_cache.read_cached(entry, (2, 3, 4, 4)) is None  # unreadable: decode again
    assert pixel_cache.read_cached(None, (2, 3, 4, 4)) is None


def test_a_disk_that_refuses_only_costs_decoding_again(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")  # a file where the cache folder should be: mkdir fails
    pixel_cache.write_cached(blocker / "entry.npy", torch.zeros((1, 1, 2, 2), dtype=torch.uint8))
    assert not (blocker / "entry.npy").exists()
