"""Benchmarks: each script prints markdown tables headed by its exact command and the machine
(see BENCHMARKS.md for the latest figures). Run them from the repository root as
`.venv/bin/python -m bench.<script>`."""
