"""Shared by training and inference: DDP, data loaders, checkpoints, work directories, logs, progress."""
