"""The base of every JSON document model the tool prints (plan documents, gate answers).

A :class:`Doc` is a frozen pydantic model whose JSON has camelCase keys in field order. Fields named
in ``omit_if_none`` are left out of the JSON when they are None (the others print ``null``).
A document also reads and compares like the JSON it prints: ``doc["someKey"]`` is that key of
:meth:`Doc.to_json`, and a document equals a mapping with the same JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from pydantic.alias_generators import to_camel


class Doc(BaseModel):  # noqa: PLW1641 - pydantic generates __hash__ for every frozen subclass
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid", defer_build=True
    )

    # field names whose key is left out of the JSON when the value is None
    omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_nulls(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if self.omit_if_none and isinstance(data, dict):
            fields = type(self).model_fields
            for name in self.omit_if_none:
                key = (fields[name].alias or name) if info.by_alias else name
                if key in data and data[key] is None:
                    del data[key]
        return data

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        return data

    def __getitem__(self, key: str) -> Any:
        """The value of one key of the JSON (``plan.target["images"]``)."""
        return self.to_json()[key]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.to_json() == other
        return super().__eq__(other)
