"""``fl-audit tradeoff``: the grid it plans, and one small picture end to end on the digits."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fl_app.audit.cli import main
from fl_app.audit.members import MEMBER_STREAM
from fl_app.audit.membership_audit import candidates
from fl_app.audit.tradeoff import SETTINGS, plan_tradeoff
from fl_app.config import parse_run_config
from fl_app.learning.data import load_test_set
from fl_app.privacy.levels import DP_LEVELS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_the_plan_runs_every_level_and_sigma_clean_robust_and_attacked_central_with_fedavg():
    sigmas = (0.5, 2.0)
    plan = plan_tradeoff(SETTINGS["digits"], noise_multipliers=sigmas, robust_rule="krum",
                         attack="alie")
    cells = [dict(kv.split("=", 1) for kv in name.split(",")) for name in plan.scenario_of]
    # no DP: 3 scenarios; record and client: 3 each per sigma; central: clean and attacked
    assert len(cells) == 3 + (3 + 3 + 2) * len(sigmas)
    for level in ("none", "record", "client", "central"):
        for scenario in ("clean", "robust", "attacked"):
            mine = [c for c in cells if c.get("dp-level", "none") == level
                    and plan.scenario_of[",".join(f"{k}={v}" for k, v in c.items())]
                    == scenario]
            expected = 0 if (level, scenario) == ("central", "robust") else (
                1 if level == "none" else len(sigmas))
            assert len(mine) == expected, (level, scenario)
            for c in mine:
                if scenario == "clean":
                    assert (c["strategy"], c["attack"], c["num-attackers"]) == (
                        "fedavg", "none", "0")
                elif scenario == "robust":
                    assert (c["strategy"], c["attack"]) == ("krum", "none")
                else:  # central DP cannot run a robust rule: FedAvg under the same attack
                    assert c["attack"] == "alie" and c["num-attackers"] == "2"
                    assert c["strategy"] == ("fedavg" if level == "central" else "krum")
    assert plan.base["audit-canaries"] == 200 and plan.base["dp-delta"] == 1e-5


def test_each_level_states_the_delta_of_its_unit():
    """record: against the client's N examples; client and central: against the K clients."""
    dp = parse_run_config({"dp": True}).dp_settings
    assert DP_LEVELS["record"].delta_of(dp, 10, 150) == pytest.approx(1 / 1500)
    assert DP_LEVELS["client"].delta_of(dp, 10, 150) == pytest.approx(1 / 100)
    assert DP_LEVELS["central"].delta_of(dp, 40, 150) == pytest.approx(1 / 400)


def test_non_members_skip_the_excluded_test_rows_and_default_to_the_old_draw():
    data = parse_run_config({}).data
    num_test = len(load_test_set(data)[1])
    x, _, is_member = candidates(data, 100)
    rows = np.random.default_rng([MEMBER_STREAM, 100, 1]).choice(num_test, 100, replace=False)
    assert np.array_equal(x[is_member == 0].numpy(), load_test_set(data)[0][rows].numpy())
    excluded = np.arange(0, num_test, 2)  # every other test image
    x, _, is_member = candidates(data, 100, excluded)
    x_test = load_test_set(data)[0].numpy()
    kept = x_test[1::2].reshape(len(x_test[1::2]), -1)
    for image in x[is_member == 0].numpy():  # every non-member is an odd row
        assert (np.abs(kept - image.ravel()).max(axis=1) == 0).any()
    with pytest.raises(ValueError, match="excluded"):
        candidates(data, num_test // 2 + 1, excluded)


@pytest.mark.usefixtures("shared_engine")
def test_fl_audit_tradeoff_writes_the_table_and_figure_and_the_bound_respects_dp(tmp_path,
                                                                                 capsys):
    out = tmp_path / "picture"
    code = main(["tradeoff", "--set", "num-server-rounds=1", "local-epochs=1",
                 "--levels", "record", "--noise-multipliers", "1.0",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| DP level |" in printed and str(out) in printed
    with open(out / "tradeoff.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6  # no DP and record: clean, robust, attacked
    assert json.loads((out / "audit.json").read_text())["rows"][0]["cell"] == rows[0]["cell"]
    assert (out / "tradeoff.png").stat().st_size > 10_000
    assert len((out / "tradeoff.md").read_text().splitlines()) == 2 + len(rows)
    for row in rows:
        run_dir = out / row["cell"]
        audit = json.loads((run_dir / "audit-canaries" / "audit.json").read_text())
        assert float(row["epsilon_lower_bound"]) == audit["epsilon_lower_bound"] >= 0
        assert 0 <= float(row["mi_loss_auc"]) <= 1
        summary = json.loads((run_dir / "summary.json").read_text())
        assert float(row["final_test_accuracy"]) == summary["final"]["final_test_accuracy"]
        if row["dp_level"] == "none":
            assert row["epsilon_accounted"] == ""
        else:  # the audit is a lower bound of a correct accounting
            assert float(row["epsilon_lower_bound"]) <= float(row["epsilon_accounted"])
            assert audit["delta"] == 1e-5
        if row["scenario"] == "attacked":
            assert row["strategy"] == "median" and row["attack"] == "ipm"
        member = json.loads((run_dir / "audit-membership" / "audit.json").read_text())
        assert member["members"] == member["non_members"] == 150 and member["shadows"] == 0


def test_a_stalled_cell_is_a_result_and_any_other_failure_stops_the_command(tmp_path,
                                                                          monkeypatch):
    from types import SimpleNamespace

    from fl_app.audit import tradeoff
    from fl_app.errors import FLAppError

    plan = plan_tradeoff(SETTINGS["digits"], levels=(), noise_multipliers=(1.0,))
    names = list(plan.scenario_of)
    audited = []
    monkeypatch.setattr(tradeoff, "audit_cell", lambda run_dir, scenario, members: (
        audited.append(run_dir.name) or {"cell": run_dir.name}))
    monkeypatch.setattr(tradeoff, "write_table", lambda rows, out: None)
    monkeypatch.setattr(tradeoff, "draw_tradeoff", lambda rows, path: None)

    def sweep(failed):
        return lambda *args, **kwargs: SimpleNamespace(failed=failed)

    tradeoff.run_tradeoff(plan, tmp_path, sweep=sweep({names[0]: "RunStalledError: ..."}))
    assert audited == names  # the stalled cell too
    audited.clear()
    with pytest.raises(FLAppError, match="ValueError"):
        tradeoff.run_tradeoff(plan, tmp_path, sweep=sweep({names[1]: "ValueError: bad"}))
    assert audited == [names[0], names[2]]
