"""Drivers (model graphs, training, evaluation, black-box inference); `main.py` only parses flags and calls these."""
