"""polyrl: asynchronous multi-environment RL post-training (see README.md)."""
