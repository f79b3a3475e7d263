"""rl-zoo3 hyperparameter files, one per algorithm (package data)."""
