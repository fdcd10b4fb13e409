"""The configuration reference, generated from the config models so it cannot drift.

``tocsin config reference`` prints it as Markdown (the README's configuration
section is this output); ``tocsin config show`` prints the effective config
with secrets masked.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, SecretStr

from tocsin.app.config import ENV_OVERRIDES, TocsinConfig

_ENV_BY_PATH = {path: var for var, (path, _) in ENV_OVERRIDES.items()}


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is None:
        if isinstance(annotation, type):
            if issubclass(annotation, BaseModel):
                return "section"
            if issubclass(annotation, SecretStr):
                return "secret"
            if issubclass(annotation, enum.Enum):
                return " \\| ".join(str(m.value) for m in annotation)
            return {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
                    "PosixPath": "path", "Path": "path"}.get(annotation.__name__, annotation.__name__)
        return str(annotation)
    args = [a for a in get_args(annotation) if a is not type(None)]
    name = getattr(origin, "__name__", str(origin))
    if name == "Literal":
        return " \\| ".join(str(a) for a in get_args(annotation))
    if name in ("list", "tuple", "set"):
        return f"list of {_type_name(args[0])}" if args else "list"
    if name == "dict":
        return "mapping"
    if len(args) == 1:
        return _type_name(args[0])
    return " or ".join(_type_name(a) for a in args)


def _default(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path):
        return f"`{value}`"
    if isinstance(value, enum.Enum):
        value = value.value
    text = json.dumps(value, default=str)
    return f"`{text}`" if len(text) <= 40 else f"`{text[:37]}...`"


def rows(model: type[BaseModel] = TocsinConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every field, sections first then their keys."""
    out: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        if model is TocsinConfig and name == "source":
            continue
        key = f"{prefix}{name}"
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        desc = (field.description or (sub.__doc__ or "").strip().splitlines()[0] if sub else field.description) or ""
        if key in _ENV_BY_PATH:
            desc = f"{desc} Env: `{_ENV_BY_PATH[key]}`.".strip()
        default = field.get_default(call_default_factory=True)
        out.append((key, _type_name(ann), _default(default), desc.replace("|", "\\|")))
        if sub is not None:
            out.extend(rows(sub, key + "."))
    return out


def markdown() -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} | {m} |" for k, t, d, m in rows()]
    return "\n".join(lines) + "\n"
