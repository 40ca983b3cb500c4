"""The actors' protocol (runtime/messages.py): frozen messages with typed, immutable fields."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from blitzclawd.runtime import messages
from blitzclawd.runtime.messages import Notify

MESSAGES = [
    cls
    for _, cls in inspect.getmembers(messages, inspect.isclass)
    if dataclasses.is_dataclass(cls) and cls.__module__ == messages.__name__
]


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_every_message_is_frozen_and_typed_without_mutable_fields(cls: type) -> None:
    assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
    for f in dataclasses.fields(cls):
        kind = str(f.type)
        assert kind != "object" and not kind.startswith(("dict", "list", "set")), (cls, f.name)


def test_a_notify_keeps_its_own_read_only_copy_of_the_facts() -> None:
    facts = {"amount_micros": 1}
    note = Notify("u", "topup_receipt", "order:1", facts)
    facts["amount_micros"] = 2
    assert note.facts["amount_micros"] == 1
    with pytest.raises(TypeError):
        note.facts["amount_micros"] = 3  # type: ignore[index]
