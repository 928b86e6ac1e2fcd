"""TOML configuration files: reading them, and wording validation errors.

Both the daemon's and the manager's config go through `read_toml` and
`describe_errors`, so every message has the same shape:
`FILE: where: key: what is wrong (and what would be valid)`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import ConfigError
from common.ids import ID_SYNTAX


class StrictModel(BaseModel):
    """A config table: unknown keys are errors, values are frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML document at path, or ConfigError saying why it cannot be read."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def describe_errors(
    exc: ValidationError,
    where: str,
    literals: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    valid_keys: Sequence[str] = (),
) -> list[str]:
    """Turn pydantic's errors into 'where: key: message' lines a person can act on.

    literals names, per choice-valued field, what to call it and its valid values;
    valid_keys, when given, is listed after an unknown key.
    """
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        value = err.get("input")
        field = err["loc"][-1] if err["loc"] else ""
        if kind == "extra_forbidden":
            message = f"unknown key {field!r}"
            if valid_keys:
                message += "; valid: " + ", ".join(valid_keys)
            key = ".".join(str(p) for p in err["loc"][:-1])
        elif kind == "missing":
            message = "required"
        elif kind == "literal_error" and literals and field in literals:
            noun, valid = literals[str(field)]
            message = f"unknown {noun} {value!r}; valid: {', '.join(valid)}"
        elif kind == "string_pattern_mismatch":
            message = f"{value!r} is not a valid id: {ID_SYNTAX}"
        elif kind == "byte_size" or kind == "byte_size_unit":
            message = f'{value!r} is not a memory size (e.g. "2GiB", "512MiB")'
        elif kind in ("model_type", "dict_type"):
            message = f"must be a table, not {value!r}"
        elif kind == "value_error":
            message = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        else:
            message = f"{err['msg']} (got {value!r})"
        lines.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")
    return lines
