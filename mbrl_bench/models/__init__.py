"""Learned dynamics models and the batched environments built from them.

* :mod:`mbrl_bench.models.ensemble` — :class:`~mbrl_bench.models.ensemble.ProbabilisticEnsemble`,
  the MBPO/PETS ensemble of Gaussian MLPs (``deterministic=True`` gives a plain MLP ensemble with
  the same interface), vectorised over members, plus its building blocks
  (:class:`~mbrl_bench.models.ensemble.EnsembleLinear`,
  :class:`~mbrl_bench.models.ensemble.Normalizer`) and its frozen config
  :class:`~mbrl_bench.models.ensemble.ProbabilisticEnsembleConfig`.
* :mod:`mbrl_bench.models.trainer` — :class:`~mbrl_bench.models.trainer.ModelTrainer`, the one fit
  of the ensemble every loop uses: holdout split, minibatch epochs, loss (Gaussian NLL or MSE,
  weight decay, log-variance bound regulariser), early stopping, elite selection, the Adam
  optimiser and its state.
* :mod:`mbrl_bench.models.model_env` — :class:`~mbrl_bench.models.model_env.ModelEnv`, which turns
  a fitted ensemble plus a termination function (and optionally a known reward function) into a
  batched environment with TS-1 / TS-∞ / mean / elite propagation.

Shapes in docstrings: ``E`` ensemble members, ``B`` rows, ``N`` data rows, ``O`` observation
dimension, ``A`` action dimension. Nothing here registers itself; registries are wired elsewhere.
"""
