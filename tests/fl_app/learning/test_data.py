import numpy as np
import pytest
import torch

from fl_app.errors import ConfigError, DataUnavailableError
from fl_app.learning.data import (
    DataConfig,
    load_partition,
    load_rows,
    load_test_set,
    partition_indices,
)


def label_skew(cfg: DataConfig, num_partitions: int) -> float:
    """Mean over partitions of the share of the most common label."""
    from fl_app.learning.data import _catalogue

    labels = _catalogue(cfg.dataset, cfg.data_dir, "train").labels
    shares = [np.bincount(labels[idx], minlength=10).max() / len(idx)
              for idx in partition_indices(cfg, num_partitions)]
    return float(np.mean(shares))


@pytest.mark.parametrize("partitioning", ["iid", "dirichlet"])
def test_partitions_cover_every_training_example_exactly_once(partitioning):
    parts = partition_indices(DataConfig(partitioning=partitioning, seed=3), 10)
    rows = np.concatenate(parts)
    assert len(rows) == 1437 and len(np.unique(rows)) == 1437
    assert all(len(p) > 0 for p in parts)


def test_iid_partitions_are_balanced_and_mixed():
    parts = partition_indices(DataConfig(), 10)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert label_skew(DataConfig(), 10) < 0.25  # ~0.1 per class, never sorted by class


def test_dirichlet_skews_labels_more_as_alpha_shrinks():
    skews = [label_skew(DataConfig(partitioning="dirichlet", dirichlet_alpha=a), 10)
             for a in (100.0, 1.0, 0.05)]
    assert skews[0] < skews[1] < skews[2]
    assert skews[2] > 0.6


@pytest.mark.parametrize("partitioning", ["iid", "dirichlet"])
def test_same_seed_same_partitions_other_seed_others(partitioning):
    a = partition_indices(DataConfig(partitioning=partitioning, seed=1), 7)
    b = partition_indices.__wrapped__(DataConfig(partitioning=partitioning, seed=1), 7)
    c = partition_indices(DataConfig(partitioning=partitioning, seed=2), 7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_partition_tensors_and_test_set():
    x, y = load_partition(DataConfig(), 0, 10)
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    _, yt = load_test_set(DataConfig())
    assert len(yt) == 360 and set(yt.tolist()) == set(range(10))


def test_partition_decoded_once_per_process():
    first = load_partition(DataConfig(seed=11), 2, 5)
    assert load_partition(DataConfig(seed=11), 2, 5)[0] is first[0]


def test_bad_partition_requests():
    with pytest.raises(ConfigError, match="partition-id"):
        load_partition(DataConfig(), 10, 10)
    with pytest.raises(ConfigError, match="num-partitions"):
        partition_indices(DataConfig(), 5000)


def test_hub_dataset_offline_says_how_to_supply_data(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataUnavailableError, match="data-dir"):
        load_test_set(DataConfig(dataset="mnist"))


def test_cifar_imagefolder_partition(cifar_dir):
    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar_dir))
    x, y = load_partition(cfg, 7, 100)
    assert x.shape == (500, 3, 32, 32) and len(y) == 500
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2  # normalised
    assert len(np.unique(y.numpy())) == 10


def test_decoded_partitions_are_shared_through_the_disk_cache(cifar_dir, tmp_path, monkeypatch):
    from fl_app.learning.data import get_dataset_spec, normalised

    monkeypatch.setenv("FL_APP_CACHE_DIR", str(tmp_path))
    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar_dir), seed=5)
    x, _ = load_partition.__wrapped__(cfg, 1, 200)
    (cached,) = tmp_path.glob("cifar10-train-pixels-*.npy")
    pixels = np.load(cached)  # the uint8 pixels, normalised again when read
    assert pixels.dtype == np.uint8 and pixels.shape == (250, 3, 32, 32)
    assert torch.equal(x, normalised(get_dataset_spec("cifar10"), torch.from_numpy(pixels)))
    again, _ = load_partition.__wrapped__(cfg, 1, 200)  # another process would read this
    assert torch.equal(x, again)
    np.save(cached, x.numpy())  # a same-shaped entry of another dtype is not pixels: ignored
    assert torch.equal(load_partition.__wrapped__(cfg, 1, 200)[0], x)
    assert np.load(cached).dtype == np.uint8  # and written again
    monkeypatch.setenv("FL_APP_CACHE_DIR", "off")
    fresh, _ = load_partition.__wrapped__(cfg, 1, 200)
    assert torch.equal(x, fresh)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("partitioning", "extra"), [
    ("pathological", {"partition-classes": 3}), ("shard", {"partition-shards": 2}),
    ("inner-dirichlet", {"dirichlet-alpha": 0.3})])
def test_flwr_datasets_label_skew_partitioners_keep_their_definitions(partitioning, extra):
    from fl_app.config import parse_run_config
    from fl_app.learning.data import split_size

    cfg = parse_run_config({"partitioning": partitioning, **extra}).data
    parts = partition_indices(cfg, 10)
    rows = np.concatenate(parts)
    assert len(rows) == len(np.unique(rows))  # disjoint
    labels = np.asarray(load_rows(cfg, "train", np.arange(split_size(cfg)))[1])
    classes = [len(set(labels[p])) for p in parts]
    sizes = [len(p) for p in parts]
    if partitioning == "pathological":  # exactly k classes each
        assert classes == [3] * 10
    elif partitioning == "shard":  # 2 label-sorted shards each: equal sizes, few classes
        assert len(set(sizes)) == 1 and max(classes) <= 4
    else:  # equal sizes (+-1), every row used, label mixes skewed
        assert max(sizes) - min(sizes) <= 1 and len(rows) == split_size(cfg)
        assert min(classes) < 10
    again = partition_indices(parse_run_config({"partitioning": partitioning, **extra}).data, 10)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def pil_inputs(paths, mode, spec):
    """The reference: PIL's convert, then torchvision's per-image ToTensor and Normalize."""
    from PIL import Image
    from torchvision import transforms

    to_input = transforms.Compose([transforms.ToTensor(),
                                   transforms.Normalize(spec.mean, spec.std)])
    out = []
    for path in paths:
        with Image.open(path) as img:
            out.append(to_input(img.convert(mode)))
    return torch.stack(out)


@pytest.mark.parametrize("decoder", ["torchcodec", "pil"])
def test_decoded_cifar_partitions_equal_torchvisions_per_image_transforms(cifar_dir, decoder,
                                                                           monkeypatch):
    """The batched decode of the real JPEGs gives exactly ToTensor + Normalize image by image."""
    from fl_app.learning import decode
    from fl_app.learning.data import _catalogue, get_dataset_spec

    monkeypatch.setenv("FL_APP_CACHE_DIR", "off")  # decode now, not a cached copy
    if decoder == "pil":  # where TorchCodec does not load
        monkeypatch.setattr(decode, "_jpeg_decoder", lambda: None)
    cfg = DataConfig(dataset="cifar10", data_dir=str(cifar_dir))
    x, _ = load_partition.__wrapped__(cfg, 7, 100)  # not the per-process cache either
    cat = _catalogue("cifar10", str(cifar_dir), "train")
    paths = [cat.rows[int(r)] for r in partition_indices(cfg, 100)[7]]
    assert torch.equal(x, pil_inputs(paths, "RGB", get_dataset_spec("cifar10")))
