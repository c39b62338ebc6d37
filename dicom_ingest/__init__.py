"""The composition root: the command line, the local and cloud deployments, replay, the function."""
