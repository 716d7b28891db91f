"""Typed TOML: a table becomes a frozen dataclass, every key checked against the dataclass's fields.

The run config, the preflight config and the reference stack's config each keep their own schema and
error class; this module is the part they share: read the file, refuse unknown sections and keys (naming
the key and the ones that exist), and coerce each value to its field's type or say which key was wrong.
Field types are read from the annotations as written (`from __future__ import annotations`): str, int,
float, bool, tuple[str, ...]; anything else needs a converter.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Converter = Callable[[Any, str], Any]


def read_toml(path: Path, error: type[Exception], what: str = "config") -> dict[str, Any]:
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def check_sections(doc: dict[str, Any], known: Iterable[str], error: type[Exception]) -> None:
    allowed = set(known)
    for key in doc:
        if key not in allowed:
            raise error(f"unknown section '[{key}]' (known: {', '.join(sorted(allowed))})")


def check_keys(table: dict[str, Any], known: Iterable[str], where: str, error: type[Exception]) -> None:
    allowed = set(known)
    for key in table:
        if key not in allowed:
            raise error(f"unknown key '{where}.{key}' (known: {', '.join(sorted(allowed))})")


def sub_table(doc: dict[str, Any], name: str, error: type[Exception]) -> dict[str, Any]:
    """`doc[name]` as a table ({} when absent)."""
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise error(f"'[{name}]' must be a table, got {value!r}")
    return value


def coerce(value: Any, kind: str, where: str, error: type[Exception]) -> Any:
    """`value` as the annotated type `kind`; an int is a float, a bool is never a number."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise error(f"'{where}' must be true or false, got {value!r}")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise error(f"'{where}' must be a number, got {value!r}")
        if kind == "int" and int(value) != value:
            raise error(f"'{where}' must be a whole number, got {value!r}")
        return int(value) if kind == "int" else float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise error(f"'{where}' must be a string, got {value!r}")
        return value
    if kind.startswith("tuple[str"):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise error(f"'{where}' must be a list of strings, got {value!r}")
        if not all(isinstance(v, str) for v in value):
            raise error(f"'{where}' must be a list of strings, got {value!r}")
        return tuple(value)
    raise error(f"'{where}': no reader for type {kind}")


def build(
    cls: type[T],
    table: Any,
    where: str,
    error: type[Exception],
    *,
    base: T | None = None,
    converters: dict[str, Converter] | None = None,
) -> T:
    """An instance of the dataclass `cls` from `table` (over `base`'s values when given).

    `converters` read the fields whose type is not a plain one (a nested table, say): each gets the raw
    value and its dotted key and returns the field's value, raising `error` naming that key.
    """
    if not isinstance(table, dict):
        raise error(f"'{where}' must be a table, got {table!r}")
    known = {f.name: str(f.type) for f in fields(cls)}  # type: ignore[arg-type]
    check_keys(table, known, where, error)
    special = converters or {}
    values: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{where}.{key}"
        values[key] = special[key](value, path) if key in special else coerce(value, known[key], path, error)
    return replace(base, **values) if base is not None else cls(**values)  # type: ignore[type-var]
