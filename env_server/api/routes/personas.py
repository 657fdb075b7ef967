"""Persona listing: public fields only."""

from __future__ import annotations

from fastapi import APIRouter

from attune_client.wire import ErrorBody, PersonaList, PersonaPublic
from env_server.api.deps import RuntimeDep
from env_server.errors import PersonaNotFound

router = APIRouter(prefix="/v1/personas", tags=["personas"])


@router.get("", summary="Every persona served", response_model=PersonaList)
async def list_personas(runtime: RuntimeDep) -> PersonaList:
    return PersonaList(personas=runtime.catalog.public())


@router.get("/{persona_id}", summary="One persona", response_model=PersonaPublic, responses={404: {"model": ErrorBody}})
async def get_persona(persona_id: str, runtime: RuntimeDep) -> PersonaPublic:
    try:
        persona = runtime.catalog.get(persona_id)
    except KeyError:
        raise PersonaNotFound(persona_id) from None
    return persona.public(runtime.catalog.pack_of(persona_id))
