"""Gradient inversion on the offline digits: one image from a 1-step gradient, DP or not."""

import copy
import json

import pytest
import torch

from fl_app.audit.reconstruct import (
    image_quality,
    invert_gradient,
    labels_from_gradient,
    local_update,
    loss_gradient,
    total_variation,
)
from fl_app.config import parse_run_config
from fl_app.learning.data import load_partition
from fl_app.learning.models import build_model

RANGE = (-1.0, 1.0)


@pytest.fixture(scope="module")
def digit():
    cfg = parse_run_config({})
    x, y = load_partition(cfg.data, 0, 10)
    torch.manual_seed(0)
    return build_model(cfg.model_name, 10), x[:1], y[:1]


def test_labels_come_from_the_most_negative_bias_gradient(digit):
    model, x, y = digit
    assert labels_from_gradient(loss_gradient(model, x, y), 1).tolist() == y.tolist()


def test_quality_metrics_are_exact_for_identical_and_worse_for_noisy_images():
    truth = torch.rand(2, 1, 8, 8) * 2 - 1
    same = image_quality(truth, truth.flip(0), RANGE)  # paired back despite the order
    assert all(q["psnr"] > 99 and q["ssim"] == pytest.approx(1.0) for q in same)
    noisy = image_quality(truth, (truth + 0.5 * torch.randn_like(truth)).clamp(*RANGE), RANGE)
    assert all(q["psnr"] < 20 and q["ssim"] < 0.9 for q in noisy)
    assert total_variation(torch.zeros(1, 1, 4, 4)) == 0


def test_one_image_is_rebuilt_from_its_gradient_but_not_from_a_dp_sgd_one(digit):
    """Without DP the server sees the image (PSNR > 30); a DP-SGD gradient hides it."""
    model, x, y = digit
    gradient = loss_gradient(model, x, y)
    labels = labels_from_gradient(gradient, 1)
    kwargs = {"steps": 1000, "restarts": 4, "tv_weight": 0.0, "seed": 0}
    clean = image_quality(x, invert_gradient(model, gradient, labels, (1, 8, 8), RANGE,
                                             **kwargs), RANGE)[0]
    assert clean["psnr"] > 30 and clean["ssim"] > 0.9
    # DP-SGD on a batch of one: clip to C = 1, add N(0, sigma^2 C^2), sigma = 1; the attacker
    # keeps the true labels (an advantage it would not have from the noisy gradient)
    norm = torch.sqrt(sum((g * g).sum() for g in gradient))
    torch.manual_seed(1)
    private = [g / max(1.0, float(norm)) + torch.randn_like(g) for g in gradient]
    noisy = image_quality(x, invert_gradient(model, private, labels, (1, 8, 8), RANGE,
                                             **kwargs), RANGE)[0]
    assert noisy["psnr"] < 15 and noisy["psnr"] < clean["psnr"] - 15


@pytest.mark.parametrize("mode", ["bookkeeping", "hooks"])
def test_the_audits_dp_sgd_step_is_the_clients_clipped_noised_mean(mode):
    """Definition: (sum_i g_i min(1, C / (||g_i|| + 1e-6)) + N(0, sigma^2 C^2 I)) / b."""
    from fl_app.audit.reconstruction_audit import dp_sgd_update

    cfg = parse_run_config({})
    x, y = load_partition(cfg.data, 0, 10)
    x, y = x[:6], y[:6]
    torch.manual_seed(0)
    model = build_model(cfg.model_name, 10)
    clip = 0.05  # below every example's gradient norm: every one is clipped
    expected = None
    for i in range(len(y)):
        g = loss_gradient(model, x[i:i + 1], y[i:i + 1])
        norm = float(torch.sqrt(sum((t * t).sum() for t in g)))
        assert norm > clip
        scaled = [t * min(1.0, clip / (norm + 1e-6)) / len(y) for t in g]
        expected = scaled if expected is None else [
            e + t for e, t in zip(expected, scaled, strict=True)]
    before = [p.detach().clone() for p in model.parameters()]
    clean = dp_sgd_update(model, x, y, clip, 0.0, torch.Generator().manual_seed(0), mode)
    for got, want in zip(clean, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    noisy = dp_sgd_update(model, x, y, clip, 2.0, torch.Generator().manual_seed(0), mode)
    noise = torch.cat([(n - c).flatten() for n, c in zip(noisy, clean, strict=True)])
    noise = noise * len(y) / (2.0 * clip)  # the draw, in units of sigma C / b
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1.0) < 0.05
    # the model itself is left as it was
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_a_k_step_update_is_the_sum_of_its_steps_gradients_and_leaves_the_model(digit):
    """(w_0 - w_K) / lr with w_{k+1} = w_k - lr g_k, against SGD itself; K DP steps sum too."""
    from fl_app.audit.reconstruction_audit import dp_sgd_update

    model, x, y = digit
    x, y = load_partition(parse_run_config({}).data, 0, 10)
    x, y = x[:4], y[:4]
    before = [p.detach().clone() for p in model.parameters()]
    update = local_update(model, x, y, lr=0.5, steps=3)
    trained = copy.deepcopy(model)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(trained(x), y).backward()
        optimizer.step()
    for u, w0, w3 in zip(update, before, trained.parameters(), strict=True):
        torch.testing.assert_close(u, (w0 - w3.detach()) / 0.5, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    one = local_update(model, x, y, lr=0.5, steps=1)
    assert all(torch.equal(a, b) for a, b in zip(one, loss_gradient(model, x, y), strict=True))
    # K noiseless DP steps with a clip no gradient reaches: the same K-step update
    private = dp_sgd_update(model, x, y, 1e6, 0.0, torch.Generator(), "bookkeeping", 0.5, 3)
    for got, want in zip(private, update, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_several_local_steps_still_leak_the_image(digit):
    """Geiping et al. Sec. 5: a 3-step update of one image, inverted by simulating the steps.

    Harder than one step (17 dB here against > 30 dB), far above the 6-7 dB of a
    reconstruction from noise (a DP-SGD update's, README).
    """
    model, x, y = digit
    update = local_update(model, x, y, lr=0.1, steps=3)
    labels = labels_from_gradient(update, 1)
    assert labels.tolist() == y.tolist()
    rebuilt = invert_gradient(model, update, labels, (1, 8, 8), RANGE, steps=500, restarts=2,
                              tv_weight=0.0, seed=0, local_steps=3, local_lr=0.1)
    assert image_quality(x, rebuilt, RANGE)[0]["psnr"] > 14


@pytest.mark.usefixtures("shared_engine")
def test_fl_audit_reconstruct_attacks_a_finished_runs_model(tmp_path, capsys):
    from fl_app.audit.cli import main
    from fl_app.experiments.simulate import simulate

    run = simulate({"num-server-rounds": 1, "output-dir": str(tmp_path)}, num_supernodes=4)
    out = tmp_path / "audit"
    assert main(["reconstruct", str(run), "--out", str(out), "--batch-sizes", "1", "2",
                 "--steps", "20", "--restarts", "1"]) == 0  # quality: the test above
    audit = json.loads((out / "audit.json").read_text())
    assert [(r["batch_size"], r["dp"]) for r in audit["results"]] == [
        (1, False), (1, True), (2, False), (2, True)]
    assert all(len(r["psnr"]) == len(r["ssim"]) == r["batch_size"] for r in audit["results"])
    assert audit["results"][1]["noise_multiplier"] == 1.0  # a run without DP: C = sigma = 1
    assert (out / "reconstructions.png").stat().st_size > 0
    assert main(["reconstruct", str(tmp_path / "nowhere")]) == 2
    assert "no model.pt" in capsys.readouterr().err
