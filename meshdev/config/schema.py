"""The JSON Schema of mesh.yaml, for editors (yaml-language-server) and other tools."""

from __future__ import annotations

from typing import Any

from meshdev.config.model import Mesh


def mesh_json_schema() -> dict[str, Any]:
    schema = Mesh.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://meshdev.dev/schema/mesh.json",
        **schema,
        "title": "meshdev mesh.yaml",
    }
