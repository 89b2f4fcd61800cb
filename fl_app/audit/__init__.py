"""Measured privacy: audits of what a run leaks (``fl-audit``).

:mod:`fl_app.audit.one_run` is the one-run epsilon lower bound of Steinke, Nasr and
Jagielski (NeurIPS 2023), pure math apart from Flower.
"""
