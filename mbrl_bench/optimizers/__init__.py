"""Policy optimizers (the ``optimizer`` registry kind): SAC (with model value expansion) and
tabular Q-learning."""
