"""Where DP-SGD's randomness comes from: the Poisson batch masks and the Gaussian noise.

DP-SGD's guarantee holds against whoever cannot predict that randomness. If the
party that runs the ServerApp could regenerate a client's noise, it could
subtract it from the update and the noise would protect nothing; privacy
amplification by subsampling also assumes the batch masks are secret. So the
source is chosen by *where the client runs*, decided from the client's own
process, never from anything the server sends:

``dp-noise-source``
  * ``"auto"`` (default): ``"seeded"`` in a simulation, ``"os"`` on a real device.
  * ``"seeded"``: a generator seeded by (run seed, round, partition): a simulation
    reproduces bit for bit. The guarantee then holds only against someone who does
    not know the run's ``seed``. Refused on a real device, by the ServerApp at start
    (:func:`resolve_noise_source`) and by every client itself, so a server that
    skips its own check still cannot make a device use it.
  * ``"os"``: fresh operating-system entropy for every client round:
    :func:`os_generator` fills the whole state of torch's CPU generator (MT19937,
    624 words = 19,968 bits) from ``os.urandom``. Nothing in the run config, the
    round, the partition, the metrics or ``context.state`` determines it.

``dp-secure-mode``
  Opacus' ``secure_mode``: the masks and the noise come from ``torchcsprng``'s
  ``/dev/urandom`` generator (a CSPRNG stream, not only a secret seed), and each
  noise draw is Opacus' sum of four Gaussians halved, which defeats the
  floating-point attacks on the noise (Mironov 2012, "On Significance of the
  Least Significant Bits for Differential Privacy"; Holohan & Braghin 2021).
  Opacus needs ``torchcsprng`` for it; where that package cannot be imported
  :func:`secure_generator` says so (:class:`SecureModeUnavailableError`).

What ``"os"`` does not give: MT19937 is not a cryptographically secure
generator. Its state is secret (drawn from the OS CSPRNG), but a party that saw
its raw outputs could reconstruct it; the server only ever sees noised
gradients, never raw draws. ``dp-secure-mode`` is for users who want a CSPRNG
stream and floating-point hardening as well.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from fl_app.errors import ConfigError, FLAppError

KEY_NOISE_SOURCE = "dp-noise-source"
KEY_SECURE_MODE = "dp-secure-mode"
NOISE_SOURCES = ("auto", "seeded", "os")

#: What a client reports it used (``clients.csv``, ``summary.json``).
SEEDED, OS, CSPRNG = "seeded", "os", "csprng"
CENTRAL_NOISE_STREAM = 0xCE27  # the seeded central noise, apart from every other stream

#: MT19937's state: 624 32-bit words, all drawn from the OS for every client round.
MT_STATE_WORDS = 624
#: Where torch's CPU generator state (``CPUGeneratorImplState``) keeps the 624 words,
#: each widened to 64 bits: after ``int64 the_initial_seed; int left; int seeded;
#: uint64 next``. :func:`os_generator` reads the state back, so a change of layout
#: fails loudly instead of drawing from a known state.
MT_STATE_OFFSET = 24

TORCHCSPRNG_MISSING = (
    "dp-secure-mode=true needs the torchcsprng package (Opacus' secure_mode draws from its "
    "/dev/urandom generator), and it cannot be imported here. It is not installable for this "
    "environment: `pip install torchcsprng` finds no version for Python {python} (its last "
    "release, 0.2.1, was built for torch 1.8 on Python <= 3.9, and the project is archived), "
    "and torch {torch} is installed. Without it, dp-noise-source='os' still gives noise that "
    "only the client knows, but not a CSPRNG stream hardened against floating-point attacks "
    "on the noise (Mironov 2012). Set dp-secure-mode=false, or run where torchcsprng imports."
)


class SecureModeUnavailableError(FLAppError, RuntimeError):
    """``dp-secure-mode`` was asked for where Opacus' CSPRNG package cannot be imported."""


def os_entropy(num_bytes: int) -> bytes:
    """Return ``num_bytes`` from the operating system's CSPRNG.

    The only way OS entropy enters DP training, so a test can patch it.
    """
    return os.urandom(num_bytes)


def running_in_simulation() -> bool:
    """True when this process is an actor of Flower's Ray-backed Simulation Engine.

    Decided from this process alone: a SuperNode runs its ClientApp as its own
    process (``flwr-clientapp``), never inside a Ray actor, and nothing a server
    sends can change that. Ray is not imported here: a process that has not
    imported it is not a Ray worker.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    return ray.get_runtime_context().get_actor_id() is not None


def check_noise_source(name: str) -> str:
    """Return ``name`` if it is one of :data:`NOISE_SOURCES`."""
    if name not in NOISE_SOURCES:
        raise ConfigError(KEY_NOISE_SOURCE, name, f"one of {list(NOISE_SOURCES)}")
    return name


def resolve_noise_source(requested: str, simulated: bool, secure_mode: bool = False) -> str:
    """Return the source a client uses: :data:`SEEDED`, :data:`OS` or :data:`CSPRNG`.

    Raises a :class:`ConfigError` naming ``dp-noise-source`` for ``"seeded"``
    outside a simulation, and naming ``dp-secure-mode`` for secure mode with
    ``"seeded"`` (a CSPRNG stream cannot be replayed from a seed).

    >>> resolve_noise_source("auto", simulated=True), resolve_noise_source("auto", False)
    ('seeded', 'os')
    """
    check_noise_source(requested)
    if secure_mode:
        if requested == "seeded":
            raise ConfigError(KEY_SECURE_MODE, True, f"false with {KEY_NOISE_SOURCE}='seeded'",
                              "Secure mode draws from a CSPRNG, which no seed can replay; "
                              f"use {KEY_NOISE_SOURCE}='auto' or 'os'.")
        return CSPRNG
    if requested == "seeded" and not simulated:
        raise ConfigError(
            KEY_NOISE_SOURCE, "seeded", "'auto' or 'os' on real devices",
            "Seeded DP noise can be regenerated by anyone who knows the run config, the server "
            "included, so it protects nothing against the server. Only a simulation (where "
            "the experimenter is every party) may use it.")
    if requested == "auto":
        return SEEDED if simulated else OS
    return requested


def seeded_generator(seed: int) -> torch.Generator:
    """Return a CPU generator seeded by ``seed`` (simulation: reproducible runs)."""
    return torch.Generator().manual_seed(seed)


def central_noise_generator(source: str, seed: int, server_round: int) -> np.random.Generator:
    """The generator of central DP's noise on the average (the server's draw, each round).

    ``seeded``: a function of (run seed, round), so a simulation reproduces bit for bit;
    otherwise 256 bits of :func:`os_entropy`, fresh every round, which no client or
    reader of the global model can predict. (Flower's own noise helper draws from
    numpy's global generator, which a run can neither seed nor key from the OS.)
    """
    if source == SEEDED:
        return np.random.default_rng([CENTRAL_NOISE_STREAM, seed, server_round])
    return np.random.default_rng(int.from_bytes(os_entropy(32), "little"))


def os_generator() -> torch.Generator:
    """Return a CPU generator whose whole MT19937 state comes from :func:`os_entropy`.

    19,968 bits, far above the 128 bits a secret seed needs; fresh on every call.
    """
    words = np.frombuffer(os_entropy(MT_STATE_WORDS * 4), dtype=np.uint32)
    generator = torch.Generator()
    state = generator.get_state().numpy().copy()
    end = MT_STATE_OFFSET + 8 * MT_STATE_WORDS
    state[MT_STATE_OFFSET:end].view(np.uint64)[:] = words
    state[:8].view(np.int64)[0] = 0  # the_initial_seed: no seed made this state
    generator.set_state(torch.from_numpy(state))
    read_back = generator.get_state().numpy()[MT_STATE_OFFSET:end].view(np.uint64)
    if not np.array_equal(read_back, words):
        raise RuntimeError(
            "torch's CPU generator state does not have the layout fl_app.privacy.randomness "
            f"expects (torch {torch.__version__}); refusing to draw DP noise from a state it "
            "did not set")
    return generator


def noise_generator_on(device: torch.device, generator: torch.Generator,
                       secure_mode: bool = False) -> torch.Generator:
    """The generator of DP-SGD's Gaussian noise for parameters on ``device``.

    On the CPU, ``generator`` itself: one stream draws the masks and the noise, as it
    always has. torch draws a CUDA tensor only from a CUDA generator (Philox), so on a
    GPU the noise comes from a Philox generator whose whole state, its 64-bit key and
    its counter offset (a multiple of 4), is drawn from ``generator``: seeded in a
    simulation (a run reproduces on the same GPU), keyed by 126 bits of the
    OS-entropy stream on a device. The masks stay on ``generator`` (the CPU). In secure
    mode ``generator`` is torchcsprng's, which draws on either device: it is kept.
    """
    if secure_mode or device.type == "cpu" or generator.device == device:
        return generator
    words = torch.randint(0, 2**32, (4,), generator=generator, dtype=torch.int64).tolist()
    on_device = torch.Generator(device=device)
    on_device.manual_seed(words[0] << 32 | words[1])
    on_device.set_offset((words[2] << 32 | words[3]) & ~3)
    return on_device


def secure_generator() -> torch.Generator:
    """Return Opacus' ``secure_mode`` generator (torchcsprng, ``/dev/urandom``), or explain."""
    try:
        import torchcsprng
    except ImportError:
        raise SecureModeUnavailableError(TORCHCSPRNG_MISSING.format(
            python=".".join(map(str, sys.version_info[:3])), torch=torch.__version__)) from None
    return torchcsprng.create_random_device_generator("/dev/urandom")


def dp_generator(source: str, seed: int) -> torch.Generator:
    """Return the generator of one client round's DP randomness from ``source``.

    ``seed`` is used by :data:`SEEDED` only; the other sources ignore it.
    """
    if source == SEEDED:
        return seeded_generator(seed)
    if source == OS:
        return os_generator()
    if source == CSPRNG:
        return secure_generator()
    raise ValueError(f"unknown DP noise source {source!r}; expected one of "
                     f"{[SEEDED, OS, CSPRNG]}")
