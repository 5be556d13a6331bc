"""Drivers: model description, training, evaluation and black-box inference. `main.py` only
parses flags and calls these."""
