"""Diagnostics of a trained AFA network (affinity, per-layer attention) and the demo's report."""
