"""Front ends: the ``lsr`` command line (and, later, the FastAPI app)."""
