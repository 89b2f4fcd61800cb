"""The federation checks: one step before round 1, the same for the server and fl-sweep."""

import pytest
from flwr.server.client_manager import SimpleClientManager

from fl_app.config import parse_run_config
from fl_app.errors import ConfigErrors
from fl_app.federation.checks import check_federation, federation_errors, start_checks


def attack_cfg(**kw):
    return parse_run_config({"attack": "ipm", "num-attackers": 3, "ipm-epsilon": 0.5, **kw})


def test_attackers_and_the_omniscient_adversary_are_checked_against_the_federation():
    with pytest.raises(ConfigErrors, match="num-attackers"):
        check_federation(attack_cfg(**{"num-attackers": 12}), 10, True)
    omni = attack_cfg(**{"attack-knowledge": "omniscient"})
    with pytest.raises(ConfigErrors, match="only a simulation"):
        check_federation(omni, 10, False)
    check_federation(omni, 10, True)  # fine in a simulation
    too_many = attack_cfg(**{"attack-knowledge": "omniscient", "num-attackers": 5})
    with pytest.raises(ConfigErrors, match="fewer than the clients sampled"):
        check_federation(too_many, 10, True)  # 5 sampled per round, 5 corrupted


def test_the_strategys_round_size_is_checked_at_start():
    """Krum with f = 2 and 5 of 10 nodes sampled: n >= 2f + 3 = 7 fails before round 1."""
    krum = parse_run_config({"strategy": "krum", "num-byzantine": 2})
    (error,) = federation_errors(krum, 10, simulated=True)
    assert error.key == "num-byzantine" and "n >= 2f + 3" in str(error)
    assert federation_errors(krum, 14, simulated=True) == []  # 7 sampled


def test_the_round_size_counts_the_rows_pre_aggregation_leaves():
    """Bucketing 14 sampled updates in pairs leaves 7 rows: Krum's 2f + 3 = 7 holds, 6 not."""
    bucketed = parse_run_config({"strategy": "krum", "num-byzantine": 2, "fraction-fit": 1.0,
                                 "pre-aggregation": "bucketing", "bucketing-size": 2})
    assert federation_errors(bucketed, 14, simulated=True) == []
    (error,) = federation_errors(bucketed, 12, simulated=True)
    assert error.key == "num-byzantine" and "got n=6, f=2" in str(error)
    bulyan = parse_run_config({"strategy": "bulyan", "num-byzantine": 2, "fraction-fit": 1.0})
    assert "n >= 4f + 3" in str(federation_errors(bulyan, 10, simulated=True)[0])
    mda = parse_run_config({"strategy": "mda", "num-byzantine": 5, "fraction-fit": 1.0,
                            "mda-max-subsets": 1000})
    assert "mda-max-subsets = 1000" in str(federation_errors(mda, 20, simulated=True)[0])
    both = parse_run_config({"strategy": "trimmed-mean", "trimmed-mean-trim": 1,
                             "trimmed-mean-fraction": 0.1, "fraction-fit": 1.0})
    (error,) = federation_errors(both, 10, simulated=True)
    assert error.key == "strategy" and "not both" in str(error)


def test_federation_errors_print_nothing(capsys):
    assert federation_errors(parse_run_config({}), 10, simulated=True) == []
    assert capsys.readouterr().out == ""
    check_federation(parse_run_config({}), 10, True)
    assert capsys.readouterr().out == "[fl_app] 10 simulated nodes, 5 sampled per round\n"


class FakeProxy:
    def __init__(self, cid):
        self.cid = cid


def test_the_start_step_checks_the_nodes_the_client_manager_has():
    manager = SimpleClientManager()
    for cid in "abc":
        manager.register(FakeProxy(cid))
    start_checks(parse_run_config({}))(manager)  # 3 real devices, FedAvg: fine
    with pytest.raises(ConfigErrors, match=r"at most the number of nodes \(3\)"):
        start_checks(attack_cfg(**{"num-attackers": 4}))(manager)


@pytest.mark.parametrize(("level", "dp", "nodes", "key"), [
    # record: delta is below each client's own 1 / N: 0.05 is refused for 143 examples,
    # and fits clients of 1 or 2 examples (1000 nodes)
    ("record", {"dp-delta": 0.05}, 10, "dp-delta"),
    ("record", {"dp-delta": 0.05}, 1000, None),
    # client and central: delta below 1 / K clients, whatever their sizes (more clients:
    # a smaller bound, where the record level's grows)
    ("client", {"dp-delta": 0.05}, 10, None),
    ("client", {"dp-delta": 0.05}, 100, "dp-delta"),
    ("central", {"dp-delta": 0.2}, 10, "dp-delta"),
    # central: one Gaussian of rate m / K a round; 500 of them cannot reach epsilon 0.01
    ("central", {"dp-target-epsilon": 0.01, "num-server-rounds": 500}, 10, "dp-target-epsilon"),
    ("central", {"dp-target-epsilon": 1.0, "num-server-rounds": 500}, 10, None),
])
def test_each_dp_levels_calibration_is_checked_against_the_federation(level, dp, nodes, key):
    cfg = parse_run_config({"dp": True, "dp-level": level, **dp})
    keys = [e.key for e in federation_errors(cfg, nodes, simulated=True)]
    assert keys == ([key] if key else [])
