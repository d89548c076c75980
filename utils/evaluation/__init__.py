"""Evaluation: validation loop, metrics, test-time inference with CRF, pseudo-label export, model loading."""
