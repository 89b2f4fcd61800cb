"""The mapped inputs entry: every partition's inputs exactly as decoded, current, shared."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from fl_app.config import parse_run_config
from fl_app.federation import checks
from fl_app.learning import data, inputs_cache, mapped_inputs
from fl_app.learning.data import DataConfig, load_partition
from fl_app.learning.mapped_inputs import store_partition_inputs

NUM_PARTITIONS = 4


def _image_folder(root, per_class: int = 9) -> None:
    """A small CIFAR-shaped ImageFolder of random JPEGs (3 classes, train and test)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b", "c"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.jpg")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FL_APP_CACHE_DIR", str(tmp_path / "cache"))
    _image_folder(tmp_path / "data")
    load_partition.cache_clear()
    yield tmp_path
    load_partition.cache_clear()
    mapped_inputs._MAPPED.clear()


def _decoded(cfg: DataConfig, partition: int, split: str = "train"):
    rows = data.partition_indices(cfg, NUM_PARTITIONS, split)[partition]
    return data._decode(cfg, split, rows, store_pixels=False)


def _served(cfg: DataConfig, partition: int, split: str = "train"):
    load_partition.cache_clear()  # what a process that never held the partition gets
    return load_partition(cfg, partition, NUM_PARTITIONS, split)


def _no_decoding(*args, **kwargs):
    raise AssertionError("the partition should have come from the inputs entry")


@pytest.mark.parametrize("partitioning", ["iid", "dirichlet"])
def test_stored_partitions_are_served_from_the_entry_exactly_as_decoded(folder, partitioning,
                                                                        monkeypatch):
    cfg = DataConfig(dataset="cifar10", data_dir=str(folder / "data"), partitioning=partitioning,
                     seed=1)
    expected = [_decoded(cfg, p) for p in range(NUM_PARTITIONS)]
    stored = store_partition_inputs(cfg, NUM_PARTITIONS)
    assert stored is not None and stored.exists()
    monkeypatch.setattr(data, "_decode", _no_decoding)
    assert store_partition_inputs(cfg, NUM_PARTITIONS) == stored  # current: kept, not redone
    for p, (x_want, y_want) in enumerate(expected):
        x, y = _served(cfg, p)
        assert x.dtype == torch.float32 and torch.equal(x, x_want) and torch.equal(y, y_want)


def test_a_changed_image_is_decoded_afresh_and_the_next_store_renews_the_entry(folder,
                                                                                monkeypatch):
    cfg = DataConfig(dataset="cifar10", data_dir=str(folder / "data"))
    store_partition_inputs(cfg, NUM_PARTITIONS)
    rows = data.partition_indices(cfg, NUM_PARTITIONS)[2]
    changed = data._catalogue(cfg.dataset, cfg.data_dir, "train").rows[int(rows[0])]
    Image.new("RGB", (32, 32), (255, 0, 0)).save(changed)
    os.utime(changed, ns=(1, 1))  # a new modification time even on a coarse clock
    x, _ = _served(cfg, 2)
    assert torch.equal(x, _decoded(cfg, 2)[0])  # the new image, not the stored one
    assert torch.all(x[0] == x[0, :, 0, 0].reshape(3, 1, 1))  # plain red, normalised
    store_partition_inputs(cfg, NUM_PARTITIONS)
    monkeypatch.setattr(data, "_decode", _no_decoding)
    assert torch.equal(_served(cfg, 2)[0], x)  # from the renewed entry


def test_another_partition_table_is_another_entry(folder, monkeypatch):
    cfg = DataConfig(dataset="cifar10", data_dir=str(folder / "data"))
    stored = store_partition_inputs(cfg, NUM_PARTITIONS)
    table = data.partition_indices(cfg, NUM_PARTITIONS)
    # Partition 0 one row longer, 1 unchanged: 1's files are the same, its offset is not
    # (a partitioner that draws differently after an upgrade).
    moved = (np.concatenate([table[0], table[3][:1]]), table[1], table[2], table[3][1:])
    monkeypatch.setattr(data, "partition_indices", lambda *args: moved)
    assert mapped_inputs.entry_of(cfg, NUM_PARTITIONS, "train")[0] != stored
    x, _ = _served(cfg, 1)
    assert torch.equal(x, data._decode(cfg, "train", moved[1], store_pixels=False)[0])


def test_writing_to_a_served_partition_leaves_the_entry_as_it_was(folder):
    cfg = DataConfig(dataset="cifar10", data_dir=str(folder / "data"))
    store_partition_inputs(cfg, NUM_PARTITIONS)
    x, _ = _served(cfg, 0)
    original = x.clone()
    x.zero_()  # copy-on-write: only this process's copy of those pages changes
    mapped_inputs._MAPPED.clear()  # map the file again, as another process would
    assert torch.equal(_served(cfg, 0)[0], original)


def test_a_malformed_entry_is_a_miss(folder):
    cfg = DataConfig(dataset="cifar10", data_dir=str(folder / "data"))
    stored = store_partition_inputs(cfg, NUM_PARTITIONS)
    entry = mapped_inputs.entry_of(cfg, NUM_PARTITIONS, "train")
    num_rows = sum(map(len, data.partition_indices(cfg, NUM_PARTITIONS)))
    assert inputs_cache.map_entry(entry, num_rows, (3, 32, 32), NUM_PARTITIONS) is not None
    assert inputs_cache.map_entry(entry, num_rows + 1, (3, 32, 32), NUM_PARTITIONS) is None
    assert inputs_cache.map_entry(entry, num_rows, (3, 32, 32), NUM_PARTITIONS + 1) is None
    stored.write_bytes(stored.read_bytes()[:200])  # truncated
    assert inputs_cache.map_entry(entry, num_rows, (3, 32, 32), NUM_PARTITIONS) is None
    mapped_inputs._MAPPED.clear()
    assert torch.equal(_served(cfg, 1)[0], _decoded(cfg, 1)[0])  # decoded, as without it


def test_nothing_is_stored_with_the_cache_off_for_digits_or_over_the_size_limit(folder,
                                                                               monkeypatch):
    cfg = DataConfig(dataset="cifar10", data_dir=str(folder / "data"))
    assert store_partition_inputs(DataConfig(dataset="digits"), NUM_PARTITIONS) is None
    monkeypatch.setattr(inputs_cache, "MAX_ENTRY_BYTES", 27 * 3 * 32 * 32 * 4 - 1)
    assert store_partition_inputs(cfg, NUM_PARTITIONS) is None
    monkeypatch.setenv("FL_APP_CACHE_DIR", "off")
    assert store_partition_inputs(cfg, NUM_PARTITIONS) is None
    assert not (folder / "cache").exists() or not list((folder / "cache").glob("inputs-*"))


@pytest.mark.parametrize(("fractions", "rounds", "splits"), [
    ((0.5, 0.0), 3, {"train"}),  # 1 - 0.5 ** 3 = 0.875 of the partitions sampled
    ((0.5, 0.5), 3, {"train", "test"}),
    ((0.25, 0.5), 2, {"test"}),  # 1 - 0.75 ** 2 = 0.4375 < 0.5: decoded as sampled
    ((0.25, 0.0), 1, set()),
])
def test_a_simulation_stores_the_splits_its_clients_will_mostly_load(folder, fractions, rounds,
                                                                     splits, monkeypatch):
    cfg = parse_run_config({"dataset": "cifar10", "data-dir": str(folder / "data"),
                            "fraction-fit": fractions[0], "fraction-evaluate": fractions[1],
                            "num-server-rounds": rounds})
    checks.store_inputs_for_actors(cfg, NUM_PARTITIONS)
    monkeypatch.setattr(data, "_decode", _no_decoding)
    for split in ("train", "test"):
        if split in splits:
            assert _served(cfg.data, 1, split)[0].shape[1:] == (3, 32, 32)
        else:
            with pytest.raises(AssertionError, match="inputs entry"):
                _served(cfg.data, 1, split)


def test_the_share_sampled_is_the_chance_a_partition_is_drawn_at_least_once():
    assert checks.share_sampled(0.25, 100, 6) == pytest.approx(1 - 0.75 ** 6)
    assert checks.share_sampled(1.0, 7, 1) == 1.0
    assert checks.share_sampled(0.001, 10, 3) == pytest.approx(1 - 0.9 ** 3)  # at least one
    rng = np.random.default_rng(0)  # against drawing the rounds: 30 of 100, 4 rounds
    drawn = [len(set().union(*(rng.choice(100, 30, replace=False) for _ in range(4)))) / 100
             for _ in range(2000)]
    assert np.mean(drawn) == pytest.approx(checks.share_sampled(0.3, 100, 4), abs=0.005)


def test_a_new_entry_removes_the_least_recently_used_ones_beyond_the_limit(folder,
                                                                           monkeypatch):
    one_entry = 27 * 3 * 32 * 32 * 4  # bytes of the inputs of the 27 training images
    monkeypatch.setattr(inputs_cache, "MAX_ENTRY_BYTES", 2 * one_entry + 1000)
    stored = {}
    for seed in (1, 2):
        cfg = DataConfig(dataset="cifar10", data_dir=str(folder / "data"), seed=seed)
        stored[seed] = store_partition_inputs(cfg, NUM_PARTITIONS)
        os.utime(stored[seed], (seed, seed))  # seed 1 used longest ago
    store_partition_inputs(DataConfig(dataset="cifar10", data_dir=str(folder / "data"),
                                      seed=1), NUM_PARTITIONS)  # used now: seed 2 is older
    third = store_partition_inputs(DataConfig(dataset="cifar10",
                                              data_dir=str(folder / "data"), seed=3),
                                   NUM_PARTITIONS)
    assert stored[1].exists() and third.exists() and not stored[2].exists()
    assert sorted(f.name for f in (folder / "cache").glob("inputs-*")) == sorted(
        [f.name for f in (stored[1], third)]
        + [f.with_name(f"{f.stem}-digests.npy").name for f in (stored[1], third)])
