"""Every check that needs the federation, run as one step before round 1.

:func:`federation_errors` lists what is wrong with a run config for a federation of
``num_nodes`` nodes (simulated or real devices), printing nothing: the ServerApp
runs it once its nodes are known (:func:`start_checks`, called by the round loop
before the first round), and ``fl-sweep`` runs it for every cell before any runs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy

from attacks.assignment import byzantine_partitions
from fl_app import keys
from fl_app.audit.canaries import run_canaries
from fl_app.audit.members import member_rows
from fl_app.config import RunConfig
from fl_app.errors import ConfigError, ConfigErrors
from fl_app.federation.roles import aggregation_options, sampled_per_round
from fl_app.federation.sampling import is_simulated, properties_of
from fl_app.learning.data import partition_indices
from fl_app.learning.device import cuda_devices_seen, cuda_index, device_error
from fl_app.learning.mapped_inputs import store_partition_inputs
from fl_app.privacy.levels import DP_LEVELS
from fl_app.privacy.randomness import (
    CSPRNG,
    KEY_SECURE_MODE,
    SecureModeUnavailableError,
    resolve_noise_source,
    secure_generator,
)
from fl_app.runs.recorder import RunRecorder
from fl_app.runs.trackers import check_tracker
from strategies.errors import RuleParameterError
from strategies.registry import make_strategy


def dp_errors_for_partitions(cfg: RunConfig, num_partitions: int) -> list[ConfigError]:
    """DP settings that no client of this partitioning could use (delta, target epsilon).

    Each DP level says what its calibration needs (:attr:`DPLevel.calibration_errors`):
    the record level every client's own dataset size, the client and central levels K.
    """
    return DP_LEVELS[cfg.dp_level].calibration_errors(
        cfg.dp_settings, cfg.train, cfg.num_server_rounds, num_partitions,
        sampled_per_round(cfg, num_partitions),
        lambda: [len(p) for p in partition_indices(cfg.data, num_partitions)])


def dp_noise_source_at_start(cfg: RunConfig, simulated: bool) -> str:
    """The DP randomness source the run's honest clients will use, or a ConfigError.

    ``dp-noise-source='seeded'`` outside a simulation is refused here, before any
    round (the clients refuse it too). In a simulation the clients run on this
    machine, so secure mode's torchcsprng is checked here as well.
    """
    source = resolve_noise_source(cfg.dp_noise_source, simulated, cfg.dp_secure_mode)
    if source == CSPRNG and simulated:
        try:
            secure_generator()
        except SecureModeUnavailableError as exc:
            raise ConfigError(KEY_SECURE_MODE, True, "false on this machine", str(exc)) from None
    return source


def byzantine_nodes(cfg: RunConfig, num_nodes: int, simulated: bool) -> list[int] | str:
    """The Byzantine partitions as far as the server knows them before the run."""
    if cfg.attack == "none":
        return []
    if cfg.omniscient:
        return f"{cfg.num_attackers} sampled clients per round, drawn anew each round"
    if simulated:
        return list(byzantine_partitions(cfg.seed, num_nodes, cfg.num_attackers))
    return "set by each SuperNode's node config (see byzantine_partitions_seen)"


def _attacker_errors(cfg: RunConfig, num_nodes: int, simulated: bool) -> list[ConfigError]:
    errors = []
    if cfg.num_attackers > num_nodes:
        errors.append(ConfigError("num-attackers", cfg.num_attackers,
                                  f"at most the number of nodes ({num_nodes})"))
    if cfg.omniscient and not simulated:
        errors.append(ConfigError(
            "attack-knowledge", "omniscient", "'own' or 'colluders' on real devices",
            "The omniscient adversary needs every honest update of the round, "
            "which only a simulation can know."))
    elif cfg.omniscient and cfg.num_attackers >= sampled_per_round(cfg, num_nodes):
        errors.append(ConfigError(
            "num-attackers", cfg.num_attackers,
            f"fewer than the clients sampled per round ({sampled_per_round(cfg, num_nodes)})",
            "The omniscient adversary corrupts that many of each round's clients."))
    return errors


def _round_size_errors(cfg: RunConfig, num_nodes: int) -> list[ConfigError]:
    """The strategy's own rule for the clients sampled per round (Krum: ``n >= 2f + 3``)."""
    sampled = sampled_per_round(cfg, num_nodes)
    strategy = make_strategy(cfg.strategy, **aggregation_options(cfg),
                             fraction_fit=cfg.fraction_fit)
    try:
        strategy.check_num_clients(sampled)
    except RuleParameterError as exc:  # a parameter that does not fit this round size
        return [ConfigError("strategy", cfg.strategy, "parameters that fit the round", str(exc))]
    except ValueError as exc:
        return [ConfigError(
            "num-byzantine", cfg.num_byzantine,
            f"a size {cfg.strategy} can aggregate with {sampled} clients sampled per round "
            f"({num_nodes} nodes x fraction-fit {cfg.fraction_fit})",
            f"{exc} (num-byzantine = -1 means f = num-attackers = {cfg.num_attackers}.)")]
    return []


def federation_errors(cfg: RunConfig, num_nodes: int, simulated: bool) -> list[ConfigError]:
    """Everything wrong with ``cfg`` for this federation: attackers, DP, the round size."""
    errors = _attacker_errors(cfg, num_nodes, simulated)
    if cfg.audit_canaries and not errors:
        try:
            run_canaries(cfg, num_nodes)
        except ValueError as exc:
            errors.append(ConfigError("audit-canaries", cfg.audit_canaries,
                                      "at most the test split's size", str(exc)))
    if cfg.audit_exclude_members:
        try:
            member_rows(cfg.data, cfg.audit_exclude_members)
        except ValueError as exc:
            errors.append(ConfigError("audit-exclude-members", cfg.audit_exclude_members,
                                      "at most the training split's size", str(exc)))
    try:  # the tracker runs in the ServerApp: its package must be here
        check_tracker(cfg.tracker)
    except ConfigError as exc:
        errors.append(exc)
    own_device = device_error(cfg.device, cuda_devices_seen(), "this process")  # evaluation
    errors += [own_device] if own_device else []
    partitions = partitioning_errors(cfg, num_nodes) if simulated else []
    if cfg.dp:
        try:
            dp_noise_source_at_start(cfg, simulated)
        except ConfigError as exc:
            errors.append(exc)
        if simulated and not partitions:  # partitions = nodes: DP against every client's size
            errors += dp_errors_for_partitions(cfg, num_nodes)
    return errors + partitions + _round_size_errors(cfg, num_nodes)


def partitioning_errors(cfg: RunConfig, num_partitions: int) -> list[ConfigError]:
    """Whether every client of ``num_partitions`` gets data: the error each would raise, once.

    The training split is partitioned as the clients will (more partitions than
    examples, or a Dirichlet draw that cannot give every client an example, fails
    here), and the test split too when clients evaluate. Computed once on the server
    (cached), before round 1: a simulation whose clients would all fail stops at start.
    """
    splits = ("train", "test") if cfg.fraction_evaluate > 0 else ("train",)
    for split in splits:
        try:
            with warnings.catch_warnings():  # flwr-datasets warns at every Dirichlet retry
                warnings.simplefilter("ignore", UserWarning)
                partition_indices(cfg.data, num_partitions, split)
        except ConfigError as exc:
            return [exc]
        except ValueError as exc:  # flwr-datasets: a Dirichlet draw left a client empty
            return [ConfigError(
                "num-partitions", num_partitions,
                f"a number of partitions that {cfg.partitioning} partitioning can give "
                f"every client data with", f"{exc} Use fewer nodes, or a larger "
                "dirichlet-alpha, or partitioning='iid'.")]
    return []


def client_device_errors(cfg: RunConfig, proxies: list[ClientProxy], simulated: bool
                         ) -> list[ConfigError]:
    """``device='cuda[:N]'`` for clients that see no such device: asked, before round 1.

    Each client reports the CUDA devices its process sees (``get_properties``). Simulated
    clients all get the backend's same resources, so one is asked; every real device is.
    ``auto`` and ``cpu`` run anywhere and ask nothing.
    """
    if cuda_index(cfg.device) is None or not proxies:
        return []
    answers = properties_of(proxies[:1] if simulated else proxies)
    seen = min(int(a.get(keys.CUDA_DEVICES, 0)) for a in answers)
    error = device_error(cfg.device, seen, "the simulated clients" if simulated else
                         "at least one client")
    return [error] if error else []


def check_federation(cfg: RunConfig, num_nodes: int, simulated: bool,
                     recorder: RunRecorder | None = None) -> None:
    """Raise :class:`ConfigErrors` if the run cannot go on with this federation; else record it.

    The federation (and, in a simulation, which nodes the seeded draw made
    Byzantine, and where DP randomness comes from) goes into ``recorder``'s
    summary.json, and one line into the log.
    """
    errors = federation_errors(cfg, num_nodes, simulated)
    if errors:
        raise ConfigErrors(errors)
    if recorder is not None:
        recorder.note_federation(
            num_nodes, simulated, byzantine_nodes(cfg, num_nodes, simulated),
            dp_noise_source=dp_noise_source_at_start(cfg, simulated) if cfg.dp else "")
    print(f"[fl_app] {num_nodes} {'simulated ' if simulated else ''}nodes, "
          f"{sampled_per_round(cfg, num_nodes)} sampled per round", flush=True)


def start_checks(cfg: RunConfig, recorder: RunRecorder | None = None
                 ) -> Callable[[ClientManager], None]:
    """The step the round loop runs before round 1: wait for a node, check the federation."""

    def check(client_manager: ClientManager) -> None:
        # Flower's compat loop refreshes its node list every 5 s, and on each call of
        # num_available/all/sample but not wait_for: asking first registers the nodes
        # already connected now (all of them in simulation) instead of up to 5 s later.
        if client_manager.num_available() < 1:
            client_manager.wait_for(1)
        proxies = list(client_manager.all().values())
        simulated = all(is_simulated(p) for p in proxies)
        errors = client_device_errors(cfg, proxies, simulated)
        if errors:
            raise ConfigErrors(errors)
        check_federation(cfg, len(proxies), simulated, recorder)
        if simulated:
            store_inputs_for_actors(cfg, len(proxies))

    return check


# Decoding a whole split up front pays when a run samples most of its partitions.
SHARE_LOADED_TO_STORE = 0.5


def share_sampled(fraction: float, num_nodes: int, rounds: int) -> float:
    """The expected share of ``num_nodes`` partitions sampled at least once in ``rounds`` rounds.

    Each round samples ``max(int(num_nodes * fraction), 1)`` nodes uniformly, as
    Flower's FedAvg and the app's seeded sampler do: ``1 - (1 - s / n) ** rounds``.
    """
    sampled = min(max(int(num_nodes * fraction), 1), num_nodes)
    return 1 - (1 - sampled / num_nodes) ** rounds


def store_inputs_for_actors(cfg: RunConfig, num_nodes: int) -> None:
    """Decode every partition the simulated clients will load once, here, before round 1.

    The actors then map their partitions from one file (fl_app.learning.inputs_cache)
    instead of each decoding and normalising them into new memory as they are sampled.
    Only for a split the run is expected to load mostly (``SHARE_LOADED_TO_STORE``);
    a short run decodes the few partitions it samples, and uses an entry stored before.
    """
    fractions = {"train": cfg.fraction_fit, "test": cfg.fraction_evaluate}
    for split, fraction in fractions.items():
        if (fraction <= 0 or share_sampled(fraction, num_nodes, cfg.num_server_rounds)
                < SHARE_LOADED_TO_STORE):
            continue
        started = time.perf_counter()
        stored = store_partition_inputs(cfg.data, num_nodes, split)
        if stored is not None:
            print(f"[fl_app] the {split} inputs of the {num_nodes} partitions are in {stored} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
