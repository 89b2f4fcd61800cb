"""Membership scores and ROC metrics on hand-made inputs."""

import numpy as np
import pytest

from fl_app.audit.membership import (
    lira_offline_scores,
    logit_confidence,
    loss_scores,
    roc_summary,
)


def test_roc_summary_of_perfect_random_and_inverted_scores():
    members = np.array([1] * 500 + [0] * 500)
    perfect = roc_summary(members + 0.0, members)
    assert perfect == {"auc": 1.0, "tpr_at_1pct_fpr": 1.0, "tpr_at_0.1pct_fpr": 1.0}
    assert roc_summary(-members + 0.0, members)["auc"] == 0.0
    random = roc_summary(np.random.default_rng(0).random(1000), members)
    assert random["auc"] == pytest.approx(0.5, abs=0.05)
    assert random["tpr_at_1pct_fpr"] < 0.05


def test_loss_attack_calls_the_low_loss_examples_members():
    losses = np.array([0.1, 2.0, 0.2, 3.0])
    assert roc_summary(loss_scores(losses), np.array([1, 0, 1, 0]))["auc"] == 1.0


def test_lira_is_the_gaussian_cdf_of_phi_against_the_shadow_out_distribution():
    rng = np.random.default_rng(1)
    shadow = rng.normal(0.0, 1.0, size=(8, 1000)) + np.linspace(-3, 3, 1000)  # per-example mu
    target = np.linspace(-3, 3, 1000) + 2.0  # every example 2 sigma above its own mean
    scores = lira_offline_scores(target, shadow)
    sigma = shadow.std(axis=0, ddof=1).mean()
    np.testing.assert_allclose(scores, __import__("scipy").stats.norm.cdf(
        (target - shadow.mean(axis=0)) / sigma))
    assert np.median(scores) > 0.9
    with pytest.raises(ValueError, match="shadow"):
        lira_offline_scores(target, shadow[:1])


def test_logit_confidence_is_finite_at_certainty():
    phi = logit_confidence(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
    assert np.isfinite(phi).all() and phi[0] > 20 and phi[1] < -20


def test_the_members_are_one_fixed_draw_and_a_shadow_client_drops_them():
    from fl_app.audit.members import member_rows
    from fl_app.client_app import HonestClient
    from fl_app.config import parse_run_config
    from fl_app.learning.data import partition_indices

    cfg = parse_run_config({})
    rows = member_rows(cfg.data, 200)
    assert np.array_equal(rows, member_rows(parse_run_config({"seed": 7}).data, 200))
    assert len(set(rows.tolist())) == 200
    shadow = parse_run_config({"audit-exclude-members": 200})
    for pid in range(3):
        held = partition_indices(cfg.data, 10)[pid]
        dropped = np.isin(held, rows).sum()
        assert len(HonestClient(shadow, pid, 10).data()[1]) == len(held) - dropped
        assert len(HonestClient(cfg, pid, 10).data()[1]) == len(held)


@pytest.mark.usefixtures("shared_engine")
def test_both_attacks_are_at_chance_on_a_model_that_never_saw_the_members(tmp_path, capsys):
    """The target itself dropped the members: AUC near 0.5 for the loss attack and LiRA."""
    import json

    from fl_app.audit.cli import main
    from fl_app.experiments.simulate import simulate

    target = simulate({"num-server-rounds": 2, "audit-exclude-members": 300,
                       "output-dir": str(tmp_path), "run-name": "target"}, num_supernodes=5)
    out = tmp_path / "audit"
    assert main(["membership", str(target), "--members", "300", "--shadows", "2",
                 "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text())
    assert set(audit["attacks"]) == {"loss", "lira-offline"} and audit["shadows"] == 2
    for name, metrics in audit["attacks"].items():
        assert abs(metrics["auc"] - 0.5) < 0.1, (name, metrics)
    assert (out / "roc.png").stat().st_size > 0
    assert "lira-offline: AUC" in capsys.readouterr().out
