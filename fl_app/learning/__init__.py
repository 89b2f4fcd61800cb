"""The learning task's data (flwr-datasets partitions) and models."""
