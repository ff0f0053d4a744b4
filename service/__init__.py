"""Front ends (``lsr.service``): the ``lsr`` command line (:mod:`~lsr.service.cli`, with the
commands in :mod:`~lsr.service.commands`), the FastAPI app (:mod:`~lsr.service.app`, assembled
from schemas, middleware, routes and shared state) and the loopback load test."""
