"""405 answers that name every method of their path in ``Allow``.

Starlette answers a method no route of a path takes with the methods of the first such route alone: ``/images``
has two (``GET`` lists, ``POST`` submits), so ``OPTIONS /images`` said ``Allow: POST``. HTTP asks for all of them
(RFC 9110, 15.5.6), and clients and the API fuzzer believe the header.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import HTTPException
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send


class AllowEveryMethodRoute(APIRoute):
    """An API route whose 405 lists the methods of every route of this class with the same path.

    The routes are declared once, at import, so what they register here is the same for every app built.
    """

    _methods_by_path: ClassVar[dict[str, set[str]]] = {}

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self._methods_by_path.setdefault(self.path_format, set()).update(self.methods or ())

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = self._methods_by_path.get(self.path_format, self.methods)
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        await super().handle(scope, receive, send)
