"""Parsing a value into one of the enums that list the harness's choices.

Hydra validates enum-typed config fields at compose time; code that builds a config or an
object directly gets the same kind of message from `choice`, naming the field.
"""

from __future__ import annotations

import enum


def choice(enum_type: type[enum.StrEnum], value: str, field: str):
    """`value` as a member of `enum_type`; ValueError naming `field` and the choices if not."""
    try:
        return enum_type(value)
    except ValueError:
        raise ValueError(f"{field}={value!r}: expected one of "
                         f"{[member.value for member in enum_type]}") from None
