"""Names of the metrics and records exchanged between ClientApp and ServerApp.

One constant per key, so the client that writes a metric and the server that
reads it cannot drift apart.
"""

# FitRes / EvaluateRes metrics sent by every client
PARTITION_ID = "partition-id"
TRAIN_LOSS = "train-loss"
BYZANTINE = "byzantine"  # simulation ground truth, recorded, never used by a defence
EPSILON = "epsilon"  # cumulative DP epsilon of this client, -1 when DP is off
TRAINED = "trained"  # 1 trained, 0 refused (DP budget spent)
STATUS = "status"  # free text: why a client did not train
ACCURACY = "accuracy"
# get_properties: the CUDA devices the client's process sees (fl_app.learning.device)
CUDA_DEVICES = "cuda-devices"
# Where a DP client's masks and noise came from this round: "seeded", "os" or "csprng"
# (fl_app.privacy.randomness); never the seed or the entropy itself.
DP_NOISE_SOURCE = "dp-noise-source"
# A DP client's accountant state (JSON, see fl_app.privacy.dump_accountant) after each
# fit; the server keeps the latest in its checkpoint and returns it in the fit config of
# a resumed run, whose clients start with an empty context.state. The same name is the
# context.state record the client keeps it in (below). Not "dp-accountant": that run-config
# key names which accountant (rdp, prv), not its state.
DP_ACCOUNTANT_STATE = "dp-accountant-state"

# Fit / evaluate config sent by the server each round
SERVER_ROUND = "server-round"

# context.state records kept by a client across rounds: DP_ACCOUNTANT_STATE (above)
