"""A small JSON schema check (the subset plugin tools use): `validate` lists the problems of a
tool call's arguments against the tool's ``input_schema``."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Problems of `value` against `schema` (type, properties, required, additionalProperties,
    enum, const, minLength, maxLength, pattern, minimum, maximum, items, minItems, maxItems).
    An empty list: valid."""
    at = f"{where!r}" if where else "the arguments"
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_TYPES.get(k, lambda v: True)(value) for k in kinds):
            return [f"{at} must be {' or '.join(kinds)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at} must be one of {', '.join(map(repr, schema['enum']))}"]
    if "const" in schema and value != schema["const"]:
        return [f"{at} must be {schema['const']!r}"]
    problems: list[str] = []
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{at} is shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{at} is longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{at} does not match {schema['pattern']!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{at} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{at} must be at most {schema['maximum']}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{at} needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{at} takes at most {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                problems += validate(item, schema["items"], f"{where or 'item'}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or ():
            if key not in value:
                problems.append(f"missing {key!r}")
        for key, item in value.items():
            if key in props:
                problems += validate(item, props[key], f"{where}.{key}" if where else str(key))
            elif schema.get("additionalProperties") is False:
                problems.append(f"unexpected {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += validate(
                    item, schema["additionalProperties"], f"{where}.{key}" if where else str(key)
                )
    return problems
