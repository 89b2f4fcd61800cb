"""``tracker = 'none'``: the result folder's own files only (the default)."""

from fl_app.runs.trackers import register_tracker

register_tracker("none", None, lambda config, log_dir, experiment, run_name: None)
