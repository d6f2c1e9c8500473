"""Shared base for every API model: camelCase on the wire, snake_case in Python, strict fields.

Fields are declared in snake_case and serialised in camelCase (the Kubernetes convention). Unknown
fields are rejected, so a typo in a manifest read from disk fails loudly instead of being ignored
(the API server prunes unknown fields of objects read from the cluster, so this never bites there).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

GROUP = "edgespec.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class ApiModel(BaseModel):
    """Base of all API types: camelCase aliases, populate by either name, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
    )

    def to_api(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
