"""The Flower app: ServerApp, ClientApp and the task, one subpackage per concept.

``config`` (run-config schema, presets), ``federation`` (roles, sampling, the round
loop), ``learning`` (data, models), ``privacy`` (DP-SGD), ``runs`` (the result
folder, checkpoints), ``experiments`` (simulate, sweeps, reports). Depends on
``strategies`` and ``attacks``, never the other way.
"""
