"""Rollout schemes (the ``rollout`` registry kind): how a policy loop turns a model into
training data (MBPO's branched k-step rollouts)."""
