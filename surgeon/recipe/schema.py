"""A JSON Schema of the recipe format, so editors can check recipes as they are typed.

With the yaml-language-server (VS Code's YAML extension and others), a recipe
that starts with ``# yaml-language-server: $schema=recipe.schema.json`` gets
completion and errors for pass names and parameters. Each registered pass is
one ``oneOf`` branch of a step, so the schema covers passes from plugins only
if they were imported before it was generated. The parser stays the
authority: the schema does not check that step ids are unique, nor the
selector's own rules (at least one criterion, a valid regex).
"""

from __future__ import annotations

from typing import Any

from surgeon.passes.registry import PassRegistry
from surgeon.passes.registry import registry as global_registry
from surgeon.passes.spec import PassSpec, _schema_of
from surgeon.recipe.parse import SUPPORTED_VERSIONS, VERIFY_FIELDS
from surgeon.recipe.validate import EXPECT_FIELDS, Field

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def recipe_json_schema(registry: PassRegistry | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of recipes that use the passes of ``registry``."""
    registry = global_registry if registry is None else registry
    return {
        "$schema": DRAFT,
        "title": "surgeon recipe",
        "type": "object",
        "required": ["version", "steps"],
        "additionalProperties": False,
        "properties": {
            "version": {"enum": list(SUPPORTED_VERSIONS), "description": "recipe format version"},
            "description": {"type": "string"},
            "plugins": {"type": "array", "items": {"type": "string"},
                        "description": "modules to import; they register passes"},
            "verify": _fields_schema(VERIFY_FIELDS),
            "steps": {"type": "array", "minItems": 1,
                      "items": {"oneOf": [_step_schema(spec) for spec in registry]}},
        },
    }


def _step_schema(spec: PassSpec) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "id": {"type": "string"},
        "pass": {"const": spec.name, "description": spec.summary},
        "with": spec.json_schema(),
        "expect": _fields_schema(EXPECT_FIELDS),
    }
    if "allow_missing" in spec.params:
        properties["allow_missing"] = {"type": "boolean"}
    required = ["pass"]
    if any(p.required for p in spec.params.values()):
        required.append("with")
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _fields_schema(fields: dict[str, Field]) -> dict[str, Any]:
    properties = {}
    for name, field in fields.items():
        schema = _schema_of(field.annotation)
        if field.minimum is not None:
            # For a mapping the minimum applies to each value (see Field).
            target = schema.get("additionalProperties", schema)
            target["minimum"] = field.minimum
        properties[name] = schema
    return {"type": "object", "properties": properties, "additionalProperties": False}
