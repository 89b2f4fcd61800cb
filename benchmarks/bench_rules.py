"""Time every robust rule: ours vs Flower 1.42's built-in (where one exists) vs its floor.

One run, the same clustered float32 updates for every contender (``n x d``, ``f`` of
them further out), one line per rule:

- ours: :func:`strategies.aggregate` by name;
- Flower: ``flwr.server.strategy.aggregate``'s ``aggregate_median`` (the core of both
  ``FedMedian`` APIs), ``aggregate_trimmed_avg`` (``FedTrimmedAvg``, fraction f / n),
  and Bulyan in the faster of its two APIs: the legacy ``aggregate_bulyan`` (repeated
  Krum, recomputing every distance for each pick) or the message API's selection
  (``select_multikrum`` on records, then its median and ``aggregate_n_closest_weights``;
  it selects the n - 2f lowest Multi-Krum scores at once, a different selection);
- floor: the kernel the rule cannot avoid, measured here: for the median and the
  trimmed mean the faster of one ``np.partition`` and one ``np.sort`` along the client
  axis; for Bulyan one float32 Gram matrix ``X @ X.T`` plus that sort; for the
  geometric median and centered clipping one pass over the data (``w @ X``) per
  iteration they used.

"same" compares ours with Flower's result (max abs difference; for Bulyan with the legacy
API's, skipped with ``--skip-slow``, when "same" is against the message API's other
selection and is not expected to be 0); "peak x" is our extra
memory at peak (tracemalloc) in units of the update matrix. MDA is left out at large n
(C(n, f) subsets): it is timed at n = 12.

Usage::

    python benchmarks/bench_rules.py                       # n = 100, d = 1M, f = 20
    python benchmarks/bench_rules.py --n 25 --d 100000 --f 5 --skip-slow
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.server.strategy.aggregate import (
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
from flwr.serverapp.strategy.multikrum import select_multikrum

from strategies import aggregate_detailed


def make_updates(n: int, d: int, f: int, seed: int = 0) -> np.ndarray:
    """Clustered float32 updates: a common vector, small noise, ``f`` rows further out."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(d, dtype=np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for row in range(n):
        spread = 0.5 if row < f else 0.01
        x[row] = common + spread * rng.standard_normal(d, dtype=np.float32)
    return x


def timed(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def peak_copies(run: Callable[[], object], matrix_bytes: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / matrix_bytes
    finally:
        tracemalloc.stop()


def sort_floor(x: np.ndarray) -> float:
    k = x.shape[0] // 2
    return min(timed(lambda: np.partition(x, k, axis=0), 1)[0],
               timed(lambda: np.sort(x, axis=0), 1)[0])


def pass_floor(x: np.ndarray) -> float:
    w = np.full(x.shape[0], 1.0 / x.shape[0], dtype=np.float32)
    return timed(lambda: w @ x, 3)[0]


def flower_bulyan(x: np.ndarray, f: int, skip_slow: bool) -> tuple[float, np.ndarray]:
    """The time of the faster of Flower's two Bulyan APIs, and the legacy API's result.

    The legacy API (skipped with ``skip_slow``: minutes) is the paper's repeated-Krum
    selection, ours too, so its result is the one to compare with; the message API
    selects otherwise (the n - 2f lowest Multi-Krum scores at once).
    """
    n = x.shape[0]
    records = [RecordDict({"arrays": ArrayRecord.from_numpy_ndarrays([row])}) for row in x]

    def message_api() -> np.ndarray:
        chosen = select_multikrum(records, f, n - 2 * f)
        arrays = [c["arrays"].to_numpy_ndarrays() for c in chosen]
        median = [np.median(np.stack([a[0] for a in arrays]), axis=0)]
        return aggregate_n_closest_weights(median, arrays, n - 4 * f)[0]

    best, out = timed(message_api, 1)
    print(f"  Flower Bulyan: message API {best:.2f} s (Multi-Krum selection)")
    if not skip_slow:
        legacy, out = timed(lambda: aggregate_bulyan(
            [([row], 1) for row in x], f, aggregate_krum, to_keep=0)[0], 1)
        best = min(best, legacy)
        print(f"  Flower Bulyan: legacy {legacy:.2f} s (repeated Krum, the paper's selection)")
    return best, np.asarray(out)


def bench(args: argparse.Namespace) -> list[dict]:
    x = make_updates(args.n, args.d, args.f)
    f, n = args.f, args.n
    results = [([row], 1) for row in x]
    sort_s, pass_s = sort_floor(x), pass_floor(x)
    gram_s = timed(lambda: x @ x.T, 1)[0]
    rows = []
    specs = {
        "median": ({}, lambda: (aggregate_median(results)[0], "FedMedian"), sort_s),
        "trimmed-mean": ({"fraction": f / n},
                         lambda: (aggregate_trimmed_avg(results, f / n)[0], "FedTrimmedAvg"),
                         sort_s),
        "bulyan": ({}, "bulyan", gram_s + sort_s),
        "geometric-median": ({"tolerance": 1e-6}, None, None),
        "centered-clipping": ({"tau": 1.0}, None, None),
    }
    for name, (params, flower, floor) in specs.items():
        ours_s, result = timed(lambda name=name, params=params: aggregate_detailed(
            name, x, num_byzantine=f, **params), args.repeats)
        row = {"rule": name, "ours": ours_s, "iterations": result.iterations}
        if floor is None:  # one pass over the data per iteration (and the start)
            floor = pass_s * ((result.iterations or 1) + 1)
        row["floor"] = floor
        if flower == "bulyan":  # timed inside: the faster API, the legacy API's result
            flower_s, flower_out = flower_bulyan(x, f, args.skip_slow)
        elif flower is not None:
            flower_s, (flower_out, _) = timed(flower, 1)
        if flower is not None:
            row.update(flower=flower_s, same=float(np.max(np.abs(result.update - flower_out))))
        row["peak"] = peak_copies(lambda name=name, params=params: aggregate_detailed(
            name, x, num_byzantine=f, **params), x.nbytes)
        rows.append(row)
    small = make_updates(12, args.d, 3)
    mda_s, _ = timed(lambda: aggregate_detailed("mda", small, num_byzantine=3), args.repeats)
    rows.append({"rule": "mda (n=12, f=3)", "ours": mda_s, "floor": timed(
        lambda: small @ small.T, 3)[0]})
    return rows


def cell(value: float | None, spec: str, width: int) -> str:
    return format(value, spec).rjust(width) if value is not None else "-".rjust(width)


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"n = {args.n}, d = {args.d} float32, f = {args.f}; seconds (best of {args.repeats})")
    head = (f"{'rule':<18} {'ours s':>8} {'flower s':>9} {'floor s':>8} {'vs flower':>9} "
            f"{'vs floor':>8} {'same':>9} {'peak x':>7} {'iters':>5}")
    print(head)
    print("-" * len(head))
    for r in rows:
        flower = r.get("flower")
        speedup = flower / r["ours"] if flower else None
        print(f"{r['rule']:<18} {cell(r['ours'], '.3f', 8)} {cell(flower, '.3f', 9)} "
              f"{cell(r['floor'], '.3f', 8)} {cell(speedup, '.1f', 8)}x "
              f"{cell(r['ours'] / r['floor'], '.2f', 7)}x {cell(r.get('same'), '.1e', 9)} "
              f"{cell(r.get('peak'), '.2f', 7)} {r.get('iterations') or '':>5}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--d", type=int, default=1_000_000)
    parser.add_argument("--f", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-slow", action="store_true",
                        help="skip Flower's legacy Bulyan (minutes at n = 100, f = 20)")
    args = parser.parse_args()
    print_table(bench(args), args)


if __name__ == "__main__":
    main()
