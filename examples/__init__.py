"""Runnable examples; a package so that ``--model examples.own_model_simulated:make_model`` imports
from the repository root."""
