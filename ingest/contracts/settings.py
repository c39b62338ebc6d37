"""Flags with the Google DICOM adapter's names, their kebab-case spellings and env variables.

Precedence: command line, then environment (``DICOM_INGEST_<NAME>``), then the default. This is
the only module that reads the environment, and only when a parser is run from ``main``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "DICOM_INGEST_"


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
