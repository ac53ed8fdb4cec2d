"""A YAML file the console reads (the fleet file, an AE roll-out file): read safely, errors that say where."""

from __future__ import annotations

from pathlib import Path

import yaml


def read_yaml(path: Path, error: type, field: str, missing: str):
    """The parsed document of `path` (yaml.safe_load). A missing, unreadable or invalid file raises
    `error(field, message[, path])` with `missing` as the message of a file that is not there."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(field, missing) from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(field, f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(field, f"not valid YAML{where}: {getattr(err, 'problem', None) or err}", path) from None
