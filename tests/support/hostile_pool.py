"""Ids and page tokens that exist, gathered from the services' own answers during a hostile
run, so generated requests also name real rows and reach the rules behind the lookups."""

from __future__ import annotations

import re
from collections import defaultdict

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from tests.support.hostile_wire import is_map
from zenthor import ids
from zenthor.ids import IdKind

# Every id scheme of the kit, read from the module so that a new table's ids join by themselves.
ID_KINDS: dict[str, IdKind] = {name: kind for name, kind in vars(ids).items() if isinstance(kind, IdKind)}
_ID = re.compile(r"^([a-z]+)_[0-9a-f]{32}$")
MAX_PER_KIND = 64


class IdPool:
    """Real ids by prefix, and page tokens the services issued."""

    def __init__(self) -> None:
        self._ids: dict[str, list[str]] = defaultdict(list)
        self.tokens: list[str] = []

    def add(self, value: str) -> None:
        match = _ID.match(value)
        if match is None:
            return
        known = self._ids[match.group(1)]
        if value not in known:
            known.append(value)
            del known[:-MAX_PER_KIND]

    def pick(self, prefix: str, index: int) -> str | None:
        known = self._ids.get(prefix)
        return known[index % len(known)] if known else None

    def pick_any(self, index: int) -> str | None:
        everything = [v for values in self._ids.values() for v in values]
        return everything[index % len(everything)] if everything else None

    def pick_token(self, index: int) -> str | None:
        return self.tokens[index % len(self.tokens)] if self.tokens else None

    def first(self, kind: IdKind) -> str:
        found = self.pick(kind.prefix, 0)
        assert found is not None, f"no {kind.prefix}_ id was seeded"
        return found

    def harvest(self, descriptor: Descriptor, raw: bytes) -> None:
        """Keeps every id and page token an answer of type `descriptor` carries."""
        try:
            message = message_factory.GetMessageClass(descriptor).FromString(raw)
        except DecodeError:
            return
        stack: list[Message] = [message]
        while stack:
            current = stack.pop()
            for field, value in current.ListFields():
                if field.type == FieldDescriptor.TYPE_STRING:
                    for text in value if field.is_repeated else [value]:
                        self.add(text)
                        if field.name.endswith("token") and text and text not in self.tokens:
                            self.tokens.append(text)
                            del self.tokens[:-MAX_PER_KIND]
                elif field.type == FieldDescriptor.TYPE_MESSAGE:
                    if is_map(field):
                        stack.extend(v for v in value.values() if isinstance(v, Message))
                    elif field.is_repeated:
                        stack.extend(value)
                    else:
                        stack.append(value)
