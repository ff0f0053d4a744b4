"""``GET``, ``POST`` and ``DELETE`` on ``/documents``: read, add or replace, delete.

Document ids travel percent-encoded in paths; the ``doc_id`` convertor takes the rest of the
path, newlines included (``path`` stops at them), so every id reaches the handler, which
refuses a bad one with 422.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.convertors import PathConvertor, register_url_convertor

from lsr.service.middleware import requires
from lsr.service.schemas import (
    ERRORS,
    WRITE_ERRORS,
    DeleteResponse,
    DocumentResponse,
    UpsertRequest,
    UpsertResponse,
)
from lsr.service.state import service_state


class _DocumentIdConvertor(PathConvertor):
    regex = r"[\s\S]+"


register_url_convertor("doc_id", _DocumentIdConvertor())
router = APIRouter(tags=["documents"])


@router.get(
    "/documents/{doc_id:doc_id}", dependencies=[Depends(requires("read"))], responses=ERRORS
)
def get_document(doc_id: str, request: Request, vector: bool = False) -> DocumentResponse:
    """A document's stored fields (``_id``, ``title``, ``text`` and the rest), and its term
    weights with ``?vector=true``. Percent-encode the id (``/`` as ``%2F``, ``.`` as ``%2E``),
    so that every id, ``a/b`` and ``..`` included, can be addressed."""
    live = service_state(request).live
    document = live.document(doc_id)
    if document is None:
        raise HTTPException(404, f"no document {doc_id!r}")
    out = {"id": doc_id, "document": document}
    if vector:
        weights = live.get(doc_id)
        if weights is None:  # deleted between the two reads
            raise HTTPException(404, f"no document {doc_id!r}")
        out["vector"] = weights
    return out


@router.post("/documents", dependencies=[Depends(requires("write"))], responses=WRITE_ERRORS)
def upsert(req: UpsertRequest, request: Request) -> UpsertResponse:
    """Add or replace documents (encoded by the server); durable when this returns. The ids
    are checked (unique, valid) by the collection before anything is written."""
    state = service_state(request)
    if len(req.documents) > state.limits.max_documents:
        raise HTTPException(422, f"at most {state.limits.max_documents} documents per request")
    ids = [d.id for d in req.documents]
    texts = [f"{d.title} {d.text}".strip() for d in req.documents]
    records = [{**(d.fields or {}), "title": d.title, "text": d.text} for d in req.documents]
    vectors, unknown = state.encode_new_documents(ids, texts)
    seq = state.live.upsert(vectors, ids, records, extras=state.encode_extras(texts) or None)
    return {"upserted": len(ids), "seq": seq, "unknown_terms": unknown or None}


@router.delete(
    "/documents/{doc_id:doc_id}", dependencies=[Depends(requires("write"))], responses=WRITE_ERRORS
)
def delete(doc_id: str, request: Request) -> DeleteResponse:
    """Delete a document (percent-encode the id, as for GET); durable when this returns."""
    state = service_state(request)
    seq, gone = state.live.delete([doc_id])
    if not gone:
        raise HTTPException(404, f"no document {doc_id!r}")
    return {"deleted": doc_id, "seq": seq}
