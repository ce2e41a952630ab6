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

import json
from typing import Any

from surgeon.recipe.catalogue import PassCatalogue, PassInfo, catalogue_or_default
from surgeon.recipe.fields import (
    CUSTOM_OP_FIELDS,
    EXPECT_FIELDS,
    OUTPUT_FIELDS,
    STEP_KEYS,
    SUPPORTED_VERSIONS,
    TOP_KEYS,
    VERIFY_FIELDS,
    Key,
)
from surgeon.recipe.types import schema_of

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def recipe_json_schema(registry: PassCatalogue | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of recipes that use the passes of ``registry``
    (default: the global pass registry)."""
    catalogue = catalogue_or_default(registry)
    steps = [_step_schema(spec) for spec in map(catalogue.lookup, catalogue.names()) if spec is not None]
    steps.append({"type": "object", "required": ["include"], "additionalProperties": False,
                  "properties": {"include": {"type": "string", "description": "splice the steps of this recipe "
                                             "file here (relative to this file)"}}})
    special = {
        "version": {"enum": list(SUPPORTED_VERSIONS)},
        "verify": _fields_schema(VERIFY_FIELDS),
        "custom_ops": {"type": "array", "items": {
            **_fields_schema(CUSTOM_OP_FIELDS), "required": ["op", "outputs"],
            "properties": {**_fields_schema(CUSTOM_OP_FIELDS)["properties"],
                           "outputs": {"type": "array", "minItems": 1,
                                       "items": {**_fields_schema(OUTPUT_FIELDS), "required": ["dtype"]}}}}},
        "steps": {"type": "array", "minItems": 1, "items": {"oneOf": steps}},
    }
    return {
        "$schema": DRAFT,
        "title": "surgeon recipe",
        "type": "object",
        "required": [key.name for key in TOP_KEYS.values() if key.required],
        "additionalProperties": False,
        "properties": {name: {**special.get(name, schema_of(key.annotation)), "description": key.doc}
                       for name, key in TOP_KEYS.items()},
    }


def schema_text(registry: PassCatalogue | None = None) -> str:
    """The schema as the text of ``recipes/recipe.schema.json``: stable key order, a final newline,
    so regenerating an unchanged schema changes no byte."""
    return json.dumps(recipe_json_schema(registry), indent=2) + "\n"


def _step_schema(spec: PassInfo) -> dict[str, Any]:
    with_schema = spec.json_schema()
    special = {
        "pass": {"const": spec.name, "description": spec.summary},
        "with": with_schema,
        "expect": {**_fields_schema(EXPECT_FIELDS), "description": STEP_KEYS["expect"].doc},
    }
    properties = {name: special.get(name) or {**schema_of(key.annotation), "description": key.doc}
                  for name, key in STEP_KEYS.items()}
    if "allow_missing" not in spec.params:
        del properties["allow_missing"]
    required = [key.name for key in STEP_KEYS.values() if key.required]
    if with_schema.get("required"):
        required.append("with")
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _fields_schema(fields: dict[str, Key]) -> dict[str, Any]:
    """A fixed mapping (``verify:``, ``expect:``): each key's type, its range as minimum/maximum."""
    return {"type": "object", "properties": {name: schema_of(key.annotation) for name, key in fields.items()},
            "additionalProperties": False}
