"""Typed, validated chapter settings: one frozen dataclass per chapter, owned by its chapter module.

A chapter module (``utils/chapters/<name>.py``) defines

.. code-block:: python

    @dataclass(frozen=True)
    class Settings(ChapterSettings):
        CHAPTER = "ch3"                          # the chapter's key
        n_pairs: int = 100                       # documented default (the cpu value)
        alpha2: list[float] = field(default_factory=lambda: [0.99, 0.5])
        ...
        PROFILES = {"smoke": dict(n_pairs=4), "cpu": {}, "colab": {...}, "gpu": {...}}

and ``Settings.for_profile(P)`` returns the settings of profile ``P``: the defaults, replaced by the
profile's block (only the values that differ), checked field by field against the annotations
(``int``, ``float``, ``str``, ``bool``, ``list[T]``, ``dict[str, T]``, ``dict``, ``T | None``) and by
the class's own :meth:`ChapterSettings.validate`. A missing block, an unknown key, a value of the
wrong type or out of range is a :class:`SettingsError` naming the profile, the chapter and the key --
raised when the notebook's setup cell resolves its settings, before anything trains.

**Budgets.** For a profile resolved with ``budget="smoke"`` (``utils.profiles``: the GPU profiles' code
paths on a CPU) every field is cut by the one rule of :func:`utils.profiles.budget_value` against the
smoke profile's value of the same field: counts and sizes take the smoke values, training step
counts are cut further, and structure (channels, dataset names, floats, switches) stays.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from typing import Any, ClassVar, Union

import numpy as np

from . import profiles


class SettingsError(ValueError):
    """A chapter's settings block is incomplete, has an unknown key or a value of the wrong form."""


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_value(value, tp, where: str):
    """``value`` checked against the annotation ``tp`` and put in canonical form (ints as int, floats
    as float, lists as lists); raises :class:`SettingsError` naming ``where``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for a in options:
            try:
                return check_value(value, a, where)
            except SettingsError as e:
                errors.append(str(e))
        raise SettingsError(f"{where} must be {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if tp is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise SettingsError(f"{where} must be a bool, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise SettingsError(f"{where} must be an int, got {type(value).__name__} {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise SettingsError(f"{where} must be a number, got {type(value).__name__} {value!r}")
        if math.isnan(float(value)):
            raise SettingsError(f"{where} must not be NaN")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where} must be a string, got {type(value).__name__} {value!r}")
        return value
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        return [check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"{where} must be a dict, got {type(value).__name__} {value!r}")
        kt, vt = (args if args else (Any, Any))
        return {check_value(k, kt, f"{where} key"): check_value(v, vt, f"{where}[{k!r}]") for k, v in value.items()}
    raise SettingsError(f"{where}: unsupported annotation {tp!r} (use int, float, str, bool, list[T], dict[str, T], "
                        f"T | None)")


@dataclasses.dataclass(frozen=True)
class ChapterSettings:
    """Base class of every chapter's settings (see the module docstring)."""

    CHAPTER: ClassVar[str] = ""
    PROFILES: ClassVar[dict] = {}

    # ------------------------------------------------------------------ hooks
    def validate(self) -> None:
        """Cross-field checks of a chapter (raise ``ValueError`` with the field's name); run after
        every field passed its type check. The default checks nothing more."""

    # ------------------------------------------------------------------ construction
    @classmethod
    def _where(cls, profile: str, key: str | None = None) -> str:
        text = f"profile {profile!r}, chapter {cls.CHAPTER!r} ({cls.__module__}.{cls.__qualname__})"
        return text + (f", key {key!r}" if key else "")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def _block(cls, profile: str) -> dict:
        if not cls.CHAPTER:
            raise SettingsError(f"{cls.__qualname__} must set CHAPTER (e.g. 'ch3')")
        if profile not in cls.PROFILES:
            raise SettingsError(f"{cls._where(profile)}: no settings block for this profile; "
                                f"PROFILES has {sorted(cls.PROFILES)} (every profile of "
                                f"{profiles.NAMES} needs one, {{}} for the defaults)")
        block = cls.PROFILES[profile]
        if not isinstance(block, dict):
            raise SettingsError(f"{cls._where(profile)}: the block must be a dict, got {type(block).__name__}")
        unknown = sorted(set(block) - set(cls.field_names()))
        if unknown:
            raise SettingsError(f"{cls._where(profile)}: unknown key(s) {unknown}; known keys: "
                                f"{sorted(cls.field_names())}")
        return block

    @classmethod
    def raw_values(cls, profile: str) -> dict:
        """The defaults replaced by ``profile``'s block, before any check (every field present)."""
        block = cls._block(profile)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in block:
                values[f.name] = copy.deepcopy(block[f.name])
            elif f.default is not dataclasses.MISSING:
                values[f.name] = copy.deepcopy(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                values[f.name] = f.default_factory()
            else:
                raise SettingsError(f"{cls._where(profile, f.name)}: missing (the field has no default, so "
                                    f"every profile's block must give it)")
        return values

    @classmethod
    def from_values(cls, values: dict, profile: str = "?"):
        """Settings from a complete dict of field values, type-checked and validated."""
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise SettingsError(f"{cls._where(profile)}: unknown key(s) {unknown}; known keys: "
                                f"{sorted(cls.field_names())}")
        checked = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                raise SettingsError(f"{cls._where(profile, f.name)}: missing")
            checked[f.name] = check_value(values[f.name], hints[f.name], cls._where(profile, f.name))
        obj = cls(**checked)
        try:
            obj.validate()
        except SettingsError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise SettingsError(f"{cls._where(profile)}: {e}") from None
        return obj

    @classmethod
    def for_profile(cls, P):
        """The settings of profile ``P`` (a :class:`utils.profiles.Profile`, or a profile name for its
        full budget), with the smoke budget applied when ``P.budget == "smoke"``."""
        if isinstance(P, str):
            name, budget = P, "full"
        else:
            name, budget = P.name, getattr(P, "budget", "full")
        if name not in profiles.NAMES:
            raise SettingsError(f"unknown profile {name!r}; expected one of {profiles.NAMES}")
        values = cls.raw_values(name)
        if budget == "smoke" and name != "smoke":
            small = cls.raw_values("smoke")
            values = {k: profiles.budget_value(v, small[k], k) for k, v in values.items()}
        return cls.from_values(values, name if budget == "full" else f"{name} (smoke budget)")

    def replace(self, **changes):
        """A copy with ``changes`` applied, checked like a profile block (for tests and variations)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(values))
        if unknown:
            raise SettingsError(f"{type(self).__qualname__}.replace: unknown key(s) {unknown}")
        values.update(changes)
        return type(self).from_values(values, "replace")

    def as_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
