"""Routes for publishing: open an upload, stream its files, commit or abort it."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from bastion.api._routes_catalog import model_resource
from bastion.api._security import Caller, authorize
from bastion.api._services import Services, services
from bastion.errors import InputError, PayloadTooLargeError
from bastion.registry import UploadSink
from bastion.registry._names import check_name

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Svc = Annotated[Services, Depends(services)]

#: Bytes gathered from the connection before they are hashed, encrypted and written
#: in a worker thread, while the next batch is being received.
_BATCH = 4 << 20


class UploadCreate(BaseModel):
    version: str = Field(max_length=64)
    signature: str = Field(description="the OMS signature bundle, base64", max_length=4 << 20)
    files: dict[str, int] = Field(description="every file of the version: path -> size in bytes")


@router.post("/models/{namespace}/{model}/versions", name="version.push", status_code=201)
def start_upload(
    namespace: str, model: str, body: UploadCreate, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    check_name(namespace, "namespace")
    request.state.audit_resource = f"{namespace}/{model}@{body.version}"[:1024]
    check_name(model, "model name")
    authorize(request, principal, model_resource(svc, namespace, model))
    try:
        signature = base64.b64decode(body.signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError("the signature must be the bundle's bytes in base64") from exc
    return svc.publisher.start(
        namespace, model, body.version, signature=signature, files=body.files, actor=principal.actor
    )


async def _authorise(request: Request, principal: Any, svc: Services, upload_id: str) -> None:
    namespace, ref = await run_in_threadpool(svc.publisher.namespace_of, upload_id)
    request.state.audit_resource = ref
    model = ref.partition("/")[2].partition("@")[0]
    resource = await run_in_threadpool(model_resource, svc, namespace, model)
    authorize(request, principal, resource)


@router.put("/uploads/{upload_id}/files/{path:path}", name="upload.file", status_code=201)
async def upload_file(
    upload_id: str, path: str, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    await _authorise(request, principal, svc, upload_id)
    request.state.audit_details["file"] = path[:1024]
    target = await run_in_threadpool(svc.publisher.target, upload_id, path)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) != target.size):
        raise PayloadTooLargeError(
            f"{path!r} was declared as {target.size} bytes; the request carries {length}"
        )
    sink = await run_in_threadpool(svc.publisher.sink, target)
    try:
        await _receive(request, sink)
        stored = await run_in_threadpool(sink.finish)
    except BaseException:
        sink.abort()
        raise
    await run_in_threadpool(svc.publisher.stored, target, stored)
    return {"path": path, "size": stored.size}


async def _receive(request: Request, sink: UploadSink) -> None:
    """Stream the body into ``sink``, processing one batch while receiving the next.

    Served by Bastion's transport, the connection gathers each batch itself (see
    ``bastion.api._transport``), so the route wakes once per batch, not per read.
    """
    batches = request.scope.get("extensions", {}).get("bastion.body_batches")
    if batches is not None:
        batches(_BATCH)
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] | None = None
    batch = bytearray()
    full: bytes | bytearray
    try:
        async for chunk in request.stream():
            if batch or len(chunk) < _BATCH:
                batch += chunk
                if len(batch) < _BATCH:
                    continue
                full, batch = batch, bytearray()
            else:
                full = chunk  # a whole batch from the connection, handed on as it is
            if pending is not None:
                await pending
            pending = loop.run_in_executor(None, sink.write, full)
        if pending is not None:
            await pending
            pending = None
        if batch:
            await run_in_threadpool(sink.write, batch)
    finally:
        if pending is not None:
            await asyncio.wait([pending])


@router.post("/uploads/{upload_id}/commit", name="upload.commit")
async def commit_upload(
    upload_id: str, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    await _authorise(request, principal, svc, upload_id)
    result: dict[str, Any] = await run_in_threadpool(svc.publisher.commit, upload_id)
    return result


@router.delete("/uploads/{upload_id}", name="upload.abort", status_code=204)
async def abort_upload(upload_id: str, request: Request, principal: Caller, svc: Svc) -> None:
    await _authorise(request, principal, svc, upload_id)
    await run_in_threadpool(svc.publisher.abort, upload_id)
