"""Server processes for tests: started on loopback, tracked by process id, always stopped.

A :class:`Processes` registry starts each server (``flower-superlink``,
``flower-supernode``, ``ray start --block``) in its own session with its output in
a log file, and follows every process it spawns (Flower starts SuperExec,
``flwr-serverapp`` and ``flwr-clientapp`` processes; Ray its daemons and
workers). :meth:`Processes.stop_all` stops them by process id (terminate, wait,
kill) and :meth:`Processes.leftovers` lists any that still run, so a fixture can
assert that nothing outlives its test. Process trees are read from ``/proc``
(Linux); a process is identified by its id *and* start time, so a reused id is
never mistaken for ours. On Linux each server also gets ``SIGTERM`` if the test
process dies (``PR_SET_PDEATHSIG``), so even a killed pytest leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The pytest-xdist group of the modules that start processes with fixed ports or Ray heads
#: (README blocks, devices, a Ray cluster, notebook kernels): one worker runs them in turn,
#: the other worker the rest of the suite (tests/conftest.py puts them first).
PROCESSES = "processes"

BIN = Path(sys.executable).parent  # the venv's bin: flower-superlink, flwr, ray, ...
LOOPBACK = "127.0.0.1"
PROC = Path("/proc")


def executable(name: str) -> str:
    """The path of a console script installed next to this Python (the venv's bin)."""
    path = BIN / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: install the package into this venv "
                                f"(pip install -e .) so that `{name}` is on its bin")
    return str(path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.5, while_alive: Sequence[Service] = ()) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` s or if a service exits."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        for service in while_alive:
            if service.returncode is not None:
                raise AssertionError(f"{service.name} exited with {service.returncode} "
                                     f"while waiting for {what}:\n{service.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class ProcId:
    """A process: its id and start time (clock ticks since boot), unique together."""

    pid: int
    start: int


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent id, state, start time) of a process, or None if it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # the name, in parentheses, may contain spaces
    return int(fields[1]), fields[0], int(fields[19])


def proc_id(pid: int) -> ProcId | None:
    """The :class:`ProcId` of a running process, or None."""
    stat = _stat(pid)
    return None if stat is None else ProcId(pid, stat[2])


def is_running(proc: ProcId) -> bool:
    """True while the process exists, is the same one (start time) and is not a zombie."""
    stat = _stat(proc.pid)
    return stat is not None and stat[2] == proc.start and stat[1] not in ("Z", "X")


def with_descendants(roots: Iterable[ProcId]) -> set[ProcId]:
    """The running ``roots`` and every running process they (transitively) started."""
    children: dict[int, list[ProcId]] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        stat = _stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None and stat[1] not in ("Z", "X"):
            children.setdefault(stat[0], []).append(ProcId(int(entry.name), stat[2]))
    found: set[ProcId] = set()
    todo = [p for p in roots if is_running(p)]
    while todo:
        proc = todo.pop()
        if proc not in found:
            found.add(proc)
            todo.extend(children.get(proc.pid, ()))
    return found


_PR_SET_PDEATHSIG = 1
_prctl = None
if sys.platform == "linux":  # looked up here, not in the forked child
    with contextlib.suppress(OSError, AttributeError):
        _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies (Linux)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def send_signal(proc: ProcId, sig: int) -> None:
    if is_running(proc):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, sig)


class Service:
    """One started server process and everything it started, with its log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: Mapping[str, str], cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.popen = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=dict(env), cwd=cwd, start_new_session=True,
                preexec_fn=_die_with_parent if _prctl is not None else None)
        root = proc_id(self.popen.pid)
        self.seen: set[ProcId] = {root} if root else set()

    @property
    def pid(self) -> int:
        """The process id of the started command."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the started command has exited, else None."""
        return self.popen.poll()

    def track(self) -> None:
        """Remember every process this service has started so far (call it often)."""
        self.seen |= with_descendants(self.seen)

    def log_text(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the log, for failure messages."""
        return f"--- {self.log_path} (end) ---\n{self.log_text()[-chars:]}"

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the command to exit; its status, or None."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def running(self) -> list[ProcId]:
        """Processes of this service that still run."""
        return sorted((p for p in self.seen if is_running(p)), key=lambda p: p.pid)

    def stop(self, grace: float = 10.0) -> None:
        """Stop this service: see :func:`stop_services`."""
        stop_services([self], grace)


def stop_services(services: Sequence[Service], grace: float = 10.0) -> None:
    """Stop services together, by process id: terminate, wait up to ``grace`` s, kill.

    Each started command gets SIGTERM first (Flower's and Ray's commands stop
    what they started); processes left over once it has exited (orphans whose
    parent went first) get SIGTERM too, and whatever still runs at the deadline
    gets SIGKILL. A process is signalled only after checking its start time.
    """
    for service in services:
        service.track()
        if service.popen.poll() is None:
            service.popen.terminate()
    termed: set[ProcId] = set()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        pending = False
        for service in services:
            service.track()  # children started during shutdown are stopped too
            if service.popen.poll() is None:
                pending = True
                continue
            for proc in service.running():
                pending = True
                if proc not in termed:
                    send_signal(proc, signal.SIGTERM)
                    termed.add(proc)
        if not pending:
            return
        time.sleep(0.2)
    for service in services:
        for proc in service.running():
            send_signal(proc, signal.SIGKILL)
        if service.popen.poll() is None:
            service.popen.kill()
        service.popen.wait(timeout=grace)
    wait_deadline = time.monotonic() + grace
    while any(s.running() for s in services) and time.monotonic() < wait_deadline:
        time.sleep(0.1)


class Processes:
    """The services a test (or module) started; :meth:`stop_all` in its teardown."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.services: list[Service] = []

    def start(self, name: str, argv: Sequence[str], cwd: Path | None = None,
              env: Mapping[str, str] | None = None) -> Service:
        """Start ``argv`` as the service ``name`` (log: ``<log_dir>/<name>.log``)."""
        service = Service(name, argv, self.log_dir / f"{name}.log",
                          {**self.env, **(env or {})}, cwd)
        self.services.append(service)
        return service

    def track(self) -> None:
        """Record the current process trees of all services."""
        for service in self.services:
            service.track()

    def stop_all(self, grace: float = 10.0) -> None:
        """Stop every service (all at once; see :func:`stop_services`)."""
        stop_services(self.services, grace)

    def leftovers(self) -> list[str]:
        """Descriptions of processes of these services that still run (should be none)."""
        return [f"{s.name}: pid {p.pid}" for s in self.services for p in s.running()]

    def logs(self) -> str:
        """The tails of all logs (for failure messages)."""
        return "\n".join(s.log_tail(2000) for s in self.services)


def run_cli(argv: Sequence[str], env: Mapping[str, str], timeout: float,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short-lived command (e.g. ``flwr``) to completion; killed after ``timeout`` s."""
    return subprocess.run(list(argv), env=dict(env), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)
