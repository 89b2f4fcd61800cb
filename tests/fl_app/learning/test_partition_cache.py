"""The on-disk partition tables: the partitioner's own rows, read back without it."""

import os

import numpy as np
import pytest

from fl_app.learning import data, partition_cache
from fl_app.learning.data import DataConfig, partition_indices


def _computed(cfg: DataConfig, num_partitions: int, split: str = "train"):
    partition_indices.cache_clear()  # this process forgets; the disk does not
    return partition_indices(cfg, num_partitions, split)


@pytest.mark.parametrize("partitioning", ["iid", "dirichlet", "shard"])
def test_a_stored_table_is_the_partitioners_and_is_read_without_it(partitioning, tmp_path,
                                                                   monkeypatch):
    cfg = DataConfig(dataset="digits", partitioning=partitioning, seed=3)
    monkeypatch.setenv("FL_APP_CACHE_DIR", "off")
    expected = _computed(cfg, 12)  # flwr-datasets' partitioner, no cache
    monkeypatch.setenv("FL_APP_CACHE_DIR", str(tmp_path))
    first = _computed(cfg, 12)
    assert [f.name.startswith("partitions-") for f in tmp_path.iterdir()] == [True]

    def no_partitioner(*args, **kwargs):
        raise AssertionError("the table should have come from the disk")

    monkeypatch.setattr(data, "_make_partitioner", no_partitioner)
    again = _computed(cfg, 12)  # what another process (a client actor) gets
    for rows in (first, again):
        assert len(rows) == 12
        for got, want in zip(rows, expected, strict=True):
            assert got.dtype == np.int64 and np.array_equal(got, want)
    partition_indices.cache_clear()


def test_an_entry_is_named_by_the_setting_the_labels_and_the_libraries(tmp_path, monkeypatch):
    monkeypatch.setenv("FL_APP_CACHE_DIR", str(tmp_path))
    labels = np.array([0, 1, 1, 2])
    key = partition_cache.table_file("setting", labels)
    assert key.parent == tmp_path and key == partition_cache.table_file("setting", labels)
    assert partition_cache.table_file("other setting", labels) != key
    assert partition_cache.table_file("setting", labels[::-1]) != key  # label order
    monkeypatch.setattr(partition_cache, "_library_versions", lambda: "flwr-datasets==99")
    assert partition_cache.table_file("setting", labels) != key  # an upgraded partitioner
    monkeypatch.setenv("FL_APP_CACHE_DIR", "off")
    assert partition_cache.table_file("setting", labels) is None


def test_only_a_whole_table_of_the_asked_shape_reads_back(tmp_path):
    entry = tmp_path / "table.npy"
    parts = (np.array([3, 0], dtype=np.int64), np.array([], dtype=np.int64),
             np.array([1, 2, 4], dtype=np.int64))
    partition_cache.write_table(entry, parts)
    back = partition_cache.read_table(entry, 3, 5)
    assert [p.tolist() for p in back] == [[3, 0], [], [1, 2, 4]]
    assert os.listdir(tmp_path) == ["table.npy"]  # no temporary file left
    assert partition_cache.read_table(entry, 2, 5) is None  # other partition count
    assert partition_cache.read_table(entry, 3, 4) is None  # a row past the split's end
    np.save(entry, np.array([0, 1, 5, 3, 1]))  # offsets that do not add up
    assert partition_cache.read_table(entry, 3, 5) is None
    entry.write_bytes(b"truncated")
    assert partition_cache.read_table(entry, 3, 5) is None
    assert partition_cache.read_table(None, 3, 5) is None
    partition_cache.write_table(None, parts)  # the cache off: nothing to do
