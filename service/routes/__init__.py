"""The app's routes, one router per concern; each reads the shared
:class:`~lsr.service.state.ServiceState` from ``request.app.state.service``."""

from lsr.service.routes.admin import router as admin
from lsr.service.routes.documents import router as documents
from lsr.service.routes.search import router as search

ROUTERS = (search, documents, admin)

__all__ = ["ROUTERS"]
