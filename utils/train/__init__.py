"""Training: the loop (``loop.py``), one generic iteration (``step.py``), optimisers, schedules, NaN guard."""
