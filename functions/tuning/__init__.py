"""Hyperparameter tuning (Katib's job): experiment spec, search algorithms, early stopping, experiment state."""
