"""A run's result folder: the recorder that keeps it up to date, and the checkpoint."""
