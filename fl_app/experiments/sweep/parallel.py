"""``fl-sweep --jobs N``: cells in N worker processes, each with its own kept Ray instance.

Flower's Simulation Engine runs one simulation at a time per process, so the
parallel unit is a process. Each job starts a private Ray instance with its share of
the cores (``cores // N``) once and keeps it, and its client actors, for every cell
it runs (:func:`fl_app.experiments.engine.open_session`). Jobs take cells in the
sweep's order as they free up; the parent records each outcome and refreshes the
reports as a sequential sweep does.

Why not N sweeps sharing one Ray instance: every job's actor pool is sized from the
whole instance's CPUs and kept between cells, so the second job's actors would wait
for the first job's to exit, that is, for the first job to end.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from fl_app.errors import ConfigError
from fl_app.experiments.sweep.cells import Cell, CellRunner, SweepResult
from fl_app.experiments.sweep.progress import SweepProgress, quiet_flower

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PR_SET_CHILD_SUBREAPER = 36


def machine_cores() -> int:
    """The CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cores_per_job(jobs: int, num_cpus_per_client: float) -> int:
    """Each job's share of the cores, or a :class:`ConfigError` naming ``--jobs``.

    >>> cores_per_job(2, 1.0) if machine_cores() >= 2 else 1
    1
    """
    cores = machine_cores()
    if jobs < 1:
        raise ConfigError("--jobs", jobs, "an integer >= 1")
    if os.environ.get("RAY_ADDRESS") and jobs > 1:
        raise ConfigError("--jobs", jobs, "1 when RAY_ADDRESS names a Ray cluster",
                          "On a cluster the one job's actors already spread over every "
                          "node's CPUs; jobs would queue behind each other's actors.")
    share = cores // jobs
    if share < num_cpus_per_client:
        raise ConfigError("--jobs", jobs, f"at most {int(cores // num_cpus_per_client)} on "
                          f"this machine ({cores} cores, {num_cpus_per_client:g} per client)",
                          "Each job needs the CPUs of at least one client.")
    return share


def _descendants(root: int) -> list[int]:
    """Every process ``root`` started, transitively (Linux ``/proc``; else none)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the command name, in parentheses, may hold spaces: the fields follow its ")"
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _kill_tree() -> None:
    """Kill every process this job started, transitively (its Ray instance and actors)."""
    # Stop the whole tree first, again until no new process shows up: a process Ray
    # spawns while we kill (an agent started by a raylet) must be stopped before it
    # can start more. Orphans come back to this job (:func:`_adopt_orphans`), so an
    # agent whose raylet already ended is still in the tree.
    stopped: set[int] = set()
    for _ in range(20):
        new = [pid for pid in _descendants(os.getpid()) if pid not in stopped]
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        stopped.update(new)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _end_job(signum: int, frame: object) -> None:
    """Kill this job's process tree, then exit.

    Not ``ray.shutdown()``: called from a signal handler it can wait forever on Ray's
    own threads; and a job killed mid-cell has nothing to save (the cell's checkpoint
    is on disk, and the next sweep resumes it).
    """
    _ignore_sigterm()  # a second SIGTERM must not cut it short
    _kill_tree()
    os._exit(128 + signum)


def _ignore_sigterm() -> None:
    """Ignore SIGTERM from now on, even if one reaches Ray's handler (a SystemExit) meanwhile.

    Two SIGTERMs can come back to back (the sweep's end, then its pool's); the second
    may land inside the very call that replaces Ray's handler.
    """
    while True:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            return
        except SystemExit:
            continue


def _prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where there is none (not Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return libc.prctl(option, value) == 0
    except (OSError, AttributeError):
        return False


def _die_with(parent_pid: int) -> None:
    """End this job when the sweep's process ends, however it ends (Linux).

    A job outliving a killed ``fl-sweep`` would keep training, and its Ray instance
    would outlive it. Two ways, because the first alone is not enough: the parent's
    death sends this job a SIGTERM, whose handler runs in the main thread between two
    bytecodes only; and a thread watches the parent, for when the main thread is
    inside a C++ call that does not come back (seen under load: Ray's
    ``GlobalStateAccessor`` connecting to its GCS in ``ray.init``, for over a minute
    after the SIGTERM, with the whole Ray instance up).
    """
    if not _prctl(PR_SET_PDEATHSIG, signal.SIGTERM):  # not Linux: a killed sweep
        return                                        # leaves its jobs running
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        raise SystemExit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="fl-sweep-parent-watch").start()


def _watch_parent(parent_pid: int, every_s: float = 0.5) -> None:
    """Kill this job's tree and exit once its parent has ended (it is then re-parented)."""
    while os.getppid() == parent_pid:
        time.sleep(every_s)
    _kill_tree()
    os._exit(128 + signal.SIGTERM)


def _adopt_orphans() -> None:
    """Make this job the parent of any process of its tree whose own parent ends (Linux).

    Ray's agents are the raylet's children; when the raylet ends first (``ray.shutdown``,
    or Ray's SIGTERM handler during ``ray.init``), they would go to ``init``, out of
    :func:`_end_job`'s reach, and they wait a minute on the ended GCS before exiting.
    """
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _start_job(num_cpus: int, quiet: bool, parent_pid: int) -> None:
    """Worker initialiser: one Ray instance for every cell this job runs."""
    _die_with(parent_pid)
    _adopt_orphans()
    from fl_app.experiments.engine import close_session, open_session

    # (after importing Flower, whose logger sets its own level when first imported)
    quiet_flower(quiet).__enter__()  # for the worker's lifetime, as the sequential sweep
    signal.signal(signal.SIGTERM, _end_job)
    try:
        open_session(num_cpus)
        # again: ray.init installs its own handler, which exits and leaves Ray's agents
        signal.signal(signal.SIGTERM, _end_job)
    except BaseException as exc:
        # A SIGTERM reached Ray's handler in ray.init (a SystemExit), or Ray failed to
        # start: either way no process of this Ray instance may outlive the job.
        _ignore_sigterm()  # Ray's handler is still in place
        _kill_tree()
        if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM:
            os._exit(128 + signal.SIGTERM)
        raise
    import atexit

    atexit.register(_kill_tree)  # last: what ray.shutdown leaves (agents ending late)
    atexit.register(close_session)


def _run_one(cell: Cell, cell_dir: Path, num_supernodes: int, runner: CellRunner | None,
             num_cpus_per_client: float | None, verbose: bool, share_prefix: bool) -> float:
    """Run one cell in a job; return its wall time in seconds."""
    from fl_app.experiments.sweep.runner import run_cell, simulate_runner

    started = time.time()
    run_cell(cell, cell_dir, runner or simulate_runner(num_cpus_per_client, verbose),
             num_supernodes, lambda row: None, share_prefix)
    return time.time() - started


def run_cells_in_jobs(todo: Sequence[tuple[int, Cell]], out: Path, num_supernodes: int,
                      jobs: int, cores_each: int, progress: SweepProgress,
                      result: SweepResult,
                      after_cell: Callable[[], None], *, runner: CellRunner | None = None,
                      num_cpus_per_client: float | None = None,
                      verbose: bool = False, share_prefix: bool = True) -> None:
    """Run ``todo`` (1-based index, cell) in ``jobs`` processes; record each outcome.

    ``cores_each`` is each job's Ray CPUs (:func:`cores_per_job`, checked at start).
    ``runner`` (tests) must be picklable: it runs in the job's process.
    """
    # spawn, not fork: a fork of a process holding Ray's or torch's threads can deadlock
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_job,
                             initargs=(cores_each, not verbose, os.getpid())) as pool:
        pending: dict[Future, tuple[int, Cell]] = {}
        for k, cell in todo:
            future = pool.submit(_run_one, cell, out / cell.name, num_supernodes, runner,
                                 num_cpus_per_client, verbose, share_prefix)
            pending[future] = (k, cell)
        progress.say(f"{len(todo)} cells in {jobs} jobs of {cores_each} core(s) each")
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                k, cell = pending.pop(future)
                try:
                    seconds = future.result()
                except Exception as exc:  # one broken cell (or job) must not lose the others
                    result.failed[cell.name] = f"{type(exc).__name__}: {exc}"
                    progress.cell_done(k, cell, f"failed: {type(exc).__name__}: {exc}")
                    continue
                result.ran.append(cell.name)
                progress.cell_done(k, cell, f"finished in {seconds:.0f} s")
                after_cell()
