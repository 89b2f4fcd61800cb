"""The robustness matrix report, on cell folders written by hand."""

import csv
import json

import pytest

from fl_app.experiments.reports import write_reports
from fl_app.experiments.reports.matrix import (
    BACKDOOR_CSV,
    MATRIX_CSV,
    WORST_CASE_CSV,
    heterogeneity,
)

# (strategy, attack, partitioning, alpha, seed) -> final accuracy
FINAL = {}
for strategy, base in (("fedavg", 0.9), ("krum", 0.8)):
    for attack, hit in (("none", 0.0), ("ipm", 0.5 if strategy == "fedavg" else 0.1),
                        ("alie", 0.2)):
        for partitioning, alpha in (("iid", 0.5), ("dirichlet", 0.1)):
            for seed in (0, 1, 2):
                FINAL[(strategy, attack, partitioning, alpha, seed)] = round(
                    base - hit - (0.1 if partitioning == "dirichlet" else 0) + 0.01 * seed, 6)


def write_cell(out, key, accuracy, backdoor=""):
    strategy, attack, partitioning, alpha, seed = key
    folder = out / f"{strategy},{attack},{partitioning},{alpha},{seed}"
    folder.mkdir(parents=True)
    config = {"strategy": strategy, "attack": attack, "num-attackers": 0 if attack == "none"
              else 2, "partitioning": partitioning, "dirichlet-alpha": alpha, "seed": seed}
    (folder / "summary.json").write_text(json.dumps({"status": "finished", "config": config}))
    with open(folder / "rounds.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["round", "test_accuracy", "backdoor_accuracy"])
        writer.writeheader()
        writer.writerows([{"round": 0, "test_accuracy": 0.1, "backdoor_accuracy": ""},
                          {"round": 1, "test_accuracy": accuracy, "backdoor_accuracy": backdoor}])


@pytest.fixture
def matrix_dir(tmp_path):
    for key, accuracy in FINAL.items():
        write_cell(tmp_path, key, accuracy)
    return tmp_path


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_matrix_table_is_the_mean_and_std_over_seeds(matrix_dir):
    written = {p.name for p in write_reports(matrix_dir)}
    assert {MATRIX_CSV, WORST_CASE_CSV, "matrix_heatmap_iid.png",
            "matrix_heatmap_dirichlet-0.1.png", "matrix_curves_iid.png"} <= written
    rows = {(r["heterogeneity"], r["strategy"], r["attack"]): r
            for r in read(matrix_dir / MATRIX_CSV)}
    assert len(rows) == 2 * 3 * 2
    row = rows[("iid", "fedavg", "ipm")]  # 0.40, 0.41, 0.42
    assert float(row["final_accuracy_mean"]) == pytest.approx(0.41)
    assert float(row["final_accuracy_std"]) == pytest.approx(0.01)
    assert row["seeds"] == "3" and row["num-attackers"] == "2"


def test_the_worst_case_is_the_lowest_mean_over_attacks(matrix_dir):
    write_reports(matrix_dir)
    worst = {(r["heterogeneity"], r["strategy"]): r for r in read(matrix_dir / WORST_CASE_CSV)}
    assert worst[("iid", "fedavg")]["worst_attack"] == "ipm"
    assert float(worst[("iid", "fedavg")]["worst_case_accuracy"]) == pytest.approx(0.41)
    assert worst[("dirichlet-0.1", "krum")]["worst_attack"] == "alie"  # 0.8 - 0.2 - 0.1
    assert float(worst[("dirichlet-0.1", "krum")]["worst_case_accuracy"]) == pytest.approx(0.51)
    assert all(r["worst_attack"] != "none" for r in worst.values())


def test_heterogeneity_labels():
    assert heterogeneity({"partitioning": "iid", "dirichlet-alpha": 0.5}) == "iid"
    assert heterogeneity({"partitioning": "dirichlet", "dirichlet-alpha": 1.0}) == "dirichlet-1.0"


def test_backdoor_cells_get_their_backdoor_accuracy_over_seeds(matrix_dir):
    assert BACKDOOR_CSV not in {p.name for p in write_reports(matrix_dir)}  # none ran it
    for seed, hit in enumerate((0.9, 0.8, 0.7)):
        write_cell(matrix_dir, ("fedavg", "backdoor", "iid", 0.5, seed), 0.85, backdoor=hit)
        write_cell(matrix_dir, ("krum", "backdoor", "iid", 0.5, seed), 0.7, backdoor=0.1)
    assert BACKDOOR_CSV in {p.name for p in write_reports(matrix_dir)}
    rows = {r["strategy"]: r for r in read(matrix_dir / BACKDOOR_CSV)}
    assert set(rows) == {"fedavg", "krum"}
    assert float(rows["fedavg"]["backdoor_accuracy_mean"]) == pytest.approx(0.8)
    assert float(rows["fedavg"]["backdoor_accuracy_std"]) == pytest.approx(0.1)
    assert float(rows["krum"]["backdoor_accuracy_mean"]) == pytest.approx(0.1)
    assert rows["krum"]["seeds"] == "3" and rows["krum"]["heterogeneity"] == "iid"
