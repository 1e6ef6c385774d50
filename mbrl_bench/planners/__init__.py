"""Planners (the ``planner`` registry kind) and planning: sampling-based optimisers of action
sequences (CEM, MPPI, random shooting), trajectory sampling through a model, the MPC
controller."""
