"""Methods behind the engine: the interface (``base.py``), the registry, one module or a few per method."""
