"""ServerApp: our strategies, central evaluation each round, and the result folder.

Thin by design: strategies come from :mod:`strategies.registry`, the result
folder from :mod:`fl_app.runs.recorder`, evaluation from :mod:`fl_app.task`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.common import (
    Context,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import ServerAppComponents, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.serverapp import Grid, ServerApp

from attacks.backdoor import backdoor_accuracy
from fl_app import keys
from fl_app.config import RunConfig, parse_run_config
from fl_app.federation.checks import start_checks
from fl_app.federation.progress import ProgressGuard
from fl_app.federation.roles import aggregation_options, build_run_model, omniscient_hook
from fl_app.federation.sampling import PartitionSampler
from fl_app.federation.server_loop import ResumableServer
from fl_app.learning.data import load_test_set
from fl_app.learning.device import load_test_set_on, model_device, resolve_device
from fl_app.privacy.levels.central import CentralDPStrategy
from fl_app.privacy.randomness import central_noise_generator
from fl_app.runs.checkpoint import Checkpoint, checkpoint_to_resume, save_checkpoint
from fl_app.runs.recorder import RunRecorder, resolve_run_dir
from fl_app.task import evaluate, get_weights, set_weights
from strategies.fedavg import UpdateSpaceFedAvg
from strategies.registry import make_strategy


def initial_weights(cfg: RunConfig) -> NDArrays:
    """The global model before round 1, the same for the same seed."""
    torch.manual_seed(cfg.seed)
    return get_weights(build_run_model(cfg))


def by_partition(proxy: ClientProxy, res: FitRes) -> tuple[float, str]:
    """Sort key of a result: its reported partition id (untrusted, so parsed safely), node id."""
    try:
        pid = float(res.metrics.get(keys.PARTITION_ID, -1))
    except (TypeError, ValueError):
        pid = -1.0
    return (pid if pid == pid else -1.0, proxy.cid)  # NaN sorts first, like a missing id


def backdoor_accuracy_of(cfg: RunConfig, model: torch.nn.Module) -> float | None:
    """The backdoor's success on the test set (``attack='backdoor'`` only, else ``None``).

    The trigger is stamped on numpy images (on the CPU); the model runs on its device.
    """
    if cfg.attack != "backdoor":
        return None
    params = cfg.attack_settings.params
    x_test, y_test = load_test_set(cfg.data)
    device = model_device(model)

    @torch.no_grad()
    def predict(images: np.ndarray) -> np.ndarray:
        model.eval()
        return model(torch.from_numpy(images).to(device)).argmax(dim=1).cpu().numpy()

    return backdoor_accuracy(predict, x_test.numpy(), y_test.numpy(), target=params["target"],
                             trigger_size=params["trigger_size"])


def build_strategy(cfg: RunConfig, recorder: RunRecorder,
                   guard: ProgressGuard | None = None) -> UpdateSpaceFedAvg:
    """Compose the configured strategy with central evaluation and recording.

    Each DP client gets back, in its fit config, the accountant it reported last
    (``recorder.dp_accountants``): a resumed run's nodes start with an empty state.
    ``guard`` sees every round's report and stops a run that stalls
    (:mod:`fl_app.federation.progress`).
    """
    device = resolve_device(cfg.device)  # this process: a ConfigError before anything runs
    x_test, y_test = load_test_set_on(device, cfg.data)
    eval_model = build_run_model(cfg).to(device)

    def evaluate_fn(server_round: int, weights: NDArrays, config: dict[str, Scalar]
                    ) -> tuple[float, dict[str, Scalar]]:
        set_weights(eval_model, weights)
        loss, acc = evaluate(eval_model, x_test, y_test)
        backdoor = backdoor_accuracy_of(cfg, eval_model)
        print(f"[fl_app] round {server_round}/{cfg.num_server_rounds}: "
              f"test accuracy {acc:.4f}, loss {loss:.4f}"
              + ("" if backdoor is None else f", backdoor accuracy {backdoor:.4f}"), flush=True)
        recorder.on_evaluate(server_round, loss, acc, weights, backdoor_accuracy=backdoor)
        return float(loss), {keys.ACCURACY: float(acc)}

    def round_config(server_round: int) -> dict[str, Scalar]:
        return {keys.SERVER_ROUND: server_round}

    def on_fit_round(report: Any) -> None:
        recorder.on_fit_round(report)
        guard.observe(report)
        if guard.errors:
            recorder.extra["client_errors"] = list(guard.errors)
        guard.check()  # a stalled run stops here; the last checkpoint is the round before

    def returned_accountant(proxy: ClientProxy) -> dict[str, Scalar]:
        kept = recorder.dp_accountants.get(recorder.label(proxy.cid))
        return {keys.DP_ACCOUNTANT_STATE: kept} if kept else {}

    strategy = make_strategy(
        cfg.strategy, **aggregation_options(cfg),
        fraction_fit=cfg.fraction_fit, fraction_evaluate=cfg.fraction_evaluate,
        min_fit_clients=1, min_evaluate_clients=1, min_available_clients=1,
        evaluate_fn=evaluate_fn, on_fit_config_fn=round_config,
        on_evaluate_config_fn=round_config,
        initial_parameters=ndarrays_to_parameters(initial_weights(cfg)),
        on_fit_round=recorder.on_fit_round if guard is None else on_fit_round,
        update_hook=omniscient_hook(cfg),
        max_failures=None if cfg.accept_failures < 0 else cfg.accept_failures,
        result_order=by_partition,
        max_update_norm=cfg.max_update_norm or None,
        client_config_fn=returned_accountant if cfg.client_dp else None,
    )
    if cfg.dp and cfg.dp_level == "central":  # Flower's server-side clipping, accounted
        # the source the start check resolved (seeded in a simulation, os elsewhere)
        return CentralDPStrategy(strategy, cfg.dp_clipping_norm, cfg.dp_settings,
                                 cfg.num_server_rounds, lambda server_round: (
                                     central_noise_generator(recorder.extra["dp_noise_source"],
                                                             cfg.seed, server_round)))
    return strategy


def server_fn(context: Context, overrides: Mapping[str, Scalar] | None = None,
              on_round: Callable[[dict[str, Any]], None] | None = None,
              user_overrides: Mapping[str, Scalar] | None = None) -> ServerAppComponents:
    """Validate the run config (plus ``overrides``), open the result folder, build the server.

    ``on_round`` (in-process runs only) is called with every rounds.csv row.
    ``user_overrides`` are the keys given to ``flwr run``, which the clients cannot
    tell from defaults: an ambiguous ``preset`` is refused
    (:func:`fl_app.config.apply_preset`).
    """
    cfg = parse_run_config({**context.run_config, **(overrides or {})}, overrides,
                           user_overrides)
    resolve_device(cfg.device)  # a device this machine lacks: refused before the run folder
    run_dir = resolve_run_dir(cfg)
    checkpoint = checkpoint_to_resume(run_dir, cfg) if cfg.resume else None
    print(f"[fl_app] results will be written to {run_dir}"
          + (f" (resuming after round {checkpoint.server_round})" if checkpoint else ""),
          flush=True)
    # The f Krum declares, resolved (num-byzantine = -1 means num-attackers)
    recorder = RunRecorder(cfg, run_dir, extra={"declared_byzantine": cfg.declared_byzantine},
                           on_round=on_round)
    sampler = PartitionSampler(cfg.seed)
    recorder.partition_of = sampler.partition_of
    guard = ProgressGuard(cfg.max_failed_rounds)
    strategy = build_strategy(cfg, recorder, guard)
    if checkpoint is not None:
        recorder.set_state(checkpoint.recorder_state)
        guard.resume_from(recorder.rounds, recorder.extra.get("client_errors", []))
        sampler.set_state(checkpoint.sampler_state)
        strategy.set_state(checkpoint.strategy_state)  # a centre, a momentum buffer

    def round_state() -> tuple[dict, dict[str, np.ndarray]]:
        """The sampler's and the strategy's state as a round ends (copies)."""
        return sampler.get_state(), {k: np.array(v, copy=True)
                                     for k, v in strategy.get_state().items()}

    def save(server_round: int, parameters: Parameters,
             state: tuple[dict, dict[str, np.ndarray]]) -> None:
        sampler_state, strategy_state = state
        save_checkpoint(run_dir, Checkpoint(
            server_round, parameters_to_ndarrays(parameters), cfg.as_dict(),
            sampler_state, recorder.get_state(), strategy_state))

    server = ResumableServer(
        client_manager=sampler, strategy=strategy, on_round_end=save, round_state=round_state,
        before_first_round=start_checks(cfg, recorder), on_failure=recorder.fail,
        start_after=checkpoint.server_round if checkpoint else None,
        start_weights=checkpoint.weights if checkpoint else None)
    return ServerAppComponents(server=server,
                               config=ServerConfig(num_rounds=cfg.num_server_rounds))


class OverridesAwareServerApp(ServerApp):
    """Flower's ServerApp that keeps the run-config keys the user gave to ``flwr run``.

    Flower hands ``server_fn`` only the merged run config; the keys given on the
    command line are the grid's ``Run.override_config``, read here before Flower
    calls ``server_fn``.
    """

    user_overrides: dict[str, Scalar]

    def __call__(self, grid: Grid, context: Context) -> None:
        """Note ``grid.run.override_config``, then run as Flower's ServerApp."""
        self.user_overrides = dict(grid.run.override_config)
        super().__call__(grid, context)


def make_server_app(overrides: Mapping[str, Scalar] | None = None,
                    on_round: Callable[[dict[str, Any]], None] | None = None) -> ServerApp:
    """A ServerApp whose run config is Flower's plus ``overrides`` (in-process runs)."""
    bound = dict(overrides or {})

    def server_fn_with_overrides(context: Context):  # Flower requires exactly this signature
        return server_fn(context, bound, on_round, user_overrides=app.user_overrides)

    app = OverridesAwareServerApp(server_fn=server_fn_with_overrides)
    return app


app = make_server_app()
