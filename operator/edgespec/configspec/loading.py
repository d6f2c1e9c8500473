"""Reading ``EdgeProfile`` objects from YAML files and from plain objects, through one parser.

A file may hold one profile, several (``---``-separated documents), or a ``List`` as printed by
``kubectl get edgeprofiles -o yaml``; an object read from the cluster goes through the same
``profile_from_object``. Errors name the file, the document and the field, in the camelCase of the
manifest, so the message says what to fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edgespec.api.base import API_VERSION
from edgespec.api.profile import EdgeProfile, EdgeProfileSpec


class ProfileLoadError(ValueError):
    """A profile file or object could not be read; the message says where and what."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(document)"


def profile_from_object(obj: Any, source: str = "<object>") -> EdgeProfileSpec:
    """The spec of one ``EdgeProfile`` object (a mapping as in a manifest or from the API server)."""
    if not isinstance(obj, Mapping):
        raise ProfileLoadError(f"{source}: expected an EdgeProfile mapping, got {type(obj).__name__}")
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if kind != "EdgeProfile":
        raise ProfileLoadError(f"{source}: kind is {kind!r}; expected EdgeProfile (apiVersion {API_VERSION})")
    if api_version != API_VERSION:
        raise ProfileLoadError(f"{source}: apiVersion is {api_version!r}; expected {API_VERSION}")
    name = (obj.get("metadata") or {}).get("name")
    where = f"{source} (EdgeProfile {name})" if name else source
    try:
        return EdgeProfile.model_validate(obj).spec
    except ValidationError as exc:
        problems = "; ".join(f"{_field_path(tuple(e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ProfileLoadError(f"{where}: {problems}") from None


def profiles_from_objects(objects: Iterable[Any], source: str = "<objects>") -> list[EdgeProfileSpec]:
    """Specs of many objects; a ``List`` (``kubectl get -o yaml``) is unpacked into its items."""
    specs: list[EdgeProfileSpec] = []
    for index, obj in enumerate(objects, start=1):
        where = f"{source}: document {index}"
        if obj is None:
            continue
        if isinstance(obj, Mapping) and obj.get("kind") in ("List", "EdgeProfileList"):
            items = obj.get("items") or []
            specs.extend(
                profile_from_object(item, f"{where} item {i}") for i, item in enumerate(items, start=1)
            )
        else:
            specs.append(profile_from_object(obj, where))
    return specs


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what the YAML parser objected to, and where (line and column, 1-based)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = exc.problem or exc.context or "syntax error"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        return f"{where}{what}{context}"
    return " ".join(str(exc).split())


def load_profiles_text(text: str, source: str = "<text>") -> list[EdgeProfileSpec]:
    """Specs of every ``EdgeProfile`` document in a YAML string."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ProfileLoadError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None
    return profiles_from_objects(documents, source)


def load_profiles(paths: Iterable[str | Path]) -> list[EdgeProfileSpec]:
    """Specs of every ``EdgeProfile`` in the given YAML files (``-`` is not special: give paths)."""
    specs: list[EdgeProfileSpec] = []
    for path in paths:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileLoadError(f"{p}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ProfileLoadError(
                f"{p}: not a text file (byte {exc.start} is not UTF-8); give EdgeProfile YAML files"
            ) from None
        specs.extend(load_profiles_text(text, str(p)))
    return specs
