"""mbrl-bench: fair, resumable comparisons of model-based reinforcement learning algorithms."""

__version__ = "0.1.0"
