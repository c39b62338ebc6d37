"""Settings: each declared once, as a config dataclass field; flags and defaults derive from it.

A setting is a field made by ``setting(...)``: its name (the Google DICOM adapter's flag name,
or ``flag=`` where the field's differs), help, type, default and choices. ``flags_of`` gives
the command-line flags (also in kebab case) with their environment variables
(``DICOM_INGEST_<NAME>``); ``build`` makes the config from the resolved values. Precedence:
command line, then environment, then the default. This is the only module that reads the
environment, and only when a parser is run from ``main``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

ENV_PREFIX = "DICOM_INGEST_"
_SETTING = "setting"  # the key of a setting's declaration in its field's metadata

ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
    """A flag or environment value is invalid; the message is meant for the operator."""


@dataclass(frozen=True)
class Flag:
    name: str
    help: str
    default: Any = None
    type: Callable[[str], Any] = str
    choices: Sequence[str] | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    for flag in flags:
        spellings = [f"--{flag.name}"]
        kebab = f"--{flag.name.replace('_', '-')}"
        if kebab != spellings[0]:
            spellings.append(kebab)
        default_text = "" if flag.default is None else f" (default: {flag.default})"
        # A boolean may stand alone (``--verbose``), as with the DICOM adapter's flags.
        alone: dict[str, Any] = {"nargs": "?", "const": "true"} if flag.type is parse_bool else {}
        parser.add_argument(
            *spellings,
            dest=flag.name,
            default=None,
            metavar=flag.name.upper(),
            help=f"{flag.help}{default_text}; env {flag.env}",
            **alone,
        )


def resolve(
    flags: Sequence[Flag], namespace: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Merge command line, environment and defaults into typed values."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for flag in flags:
        raw = getattr(namespace, flag.name, None)
        source = f"--{flag.name}"
        if raw is None and flag.env in env:
            raw, source = env[flag.env], flag.env
        if raw is None:
            values[flag.name] = flag.default
            continue
        if flag.choices is not None and raw not in flag.choices:
            raise ConfigError(f"{source}: {raw!r} is not one of {', '.join(flag.choices)}")
        try:
            values[flag.name] = flag.type(raw)
        except ConfigError:
            raise  # already says which setting, in the operator's words
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    return values


def with_defaults(flags: Sequence[Flag], **defaults: Any) -> tuple[Flag, ...]:
    """The same flags with other defaults, for a deployment whose sensible default differs."""
    unknown = set(defaults) - {flag.name for flag in flags}
    if unknown:
        raise ValueError(f"no such flags: {sorted(unknown)}")
    return tuple(
        dataclasses.replace(flag, default=defaults[flag.name]) if flag.name in defaults else flag
        for flag in flags
    )


def select(flags: Sequence[Flag], *names: str) -> tuple[Flag, ...]:
    """The flags of these names, in this order."""
    by_name = {flag.name: flag for flag in flags}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"no such flags: {unknown}")
    return tuple(by_name[name] for name in names)


@dataclass(frozen=True)
class Setting:
    """A config field's declaration: what its flag is called, parses and defaults to."""

    help: str
    default: Any = None
    type: Callable[[str], Any] = str
    choices: Sequence[str] | None = None
    flag: str | None = None  # the flag's name where it differs from the field's
    required: bool = False  # no default: the operator must give it

    def field(self) -> Any:
        """The dataclass field carrying this declaration (and its default, if any)."""
        if self.required:
            return dataclasses.field(metadata={_SETTING: self})
        return dataclasses.field(default=self.default, metadata={_SETTING: self})


def setting(
    help: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    *,
    choices: Sequence[str] | None = None,
    flag: str | None = None,
    required: bool = False,
) -> Any:
    """Declare a config field as a setting (``name: int = setting("…", 4, int)``)."""
    return Setting(help, default, type, choices, flag, required).field()


def declared(config: Any) -> tuple[tuple[str, str, Setting], ...]:
    """(field name, flag name, declaration) of each setting of a config dataclass."""
    return tuple(
        (f.name, f.metadata[_SETTING].flag or f.name, f.metadata[_SETTING])
        for f in dataclasses.fields(config)
        if _SETTING in f.metadata
    )


def flags_of(config: Any) -> tuple[Flag, ...]:
    """The command-line flags of a config dataclass's settings, in field order."""
    return tuple(
        Flag(name, s.help, s.default, s.type, s.choices) for _, name, s in declared(config)
    )


def build(config: Callable[..., ConfigT], values: Mapping[str, Any], **others: Any) -> ConfigT:
    """The config from resolved flag values; ``others`` are its fields that are no settings."""
    arguments = dict(others)
    for field_name, flag_name, declaration in declared(config):
        value = values[flag_name]
        if declaration.required and value in (None, ""):
            raise ConfigError(f"--{flag_name} is required")
        arguments[field_name] = value
    return config(**arguments)
