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
import errno
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

ENV_PREFIX = "DICOM_INGEST_"
_SETTING = "setting"  # the key of a setting's declaration in its field's metadata

ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
    """A flag or environment value is invalid; the message is meant for the operator."""


class PortInUse(OSError):
    """A port a setting asks to listen on is taken; the message names the setting and port."""

    def __init__(self, flag: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"--{flag} {port}: address already in use")
        self.flag, self.port = flag, port

    def __str__(self) -> str:
        return str(self.strerror)


@contextmanager
def listening_on(flag: str, port: int) -> Iterator[None]:
    """Binds inside this block that find the port taken raise ``PortInUse`` naming the flag."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(flag, port) from exc
        raise


@dataclass(frozen=True)
class Flag:
    name: str
    help: str
    default: Any = None
    type: Callable[[str], Any] = str
    choices: Sequence[str] | None = None
    required: bool = False
    env_var: bool = True  # False: a command-line option only (``status --limit``)
    const: str | None = None  # the value of the flag given alone, without a value
    metavar: str | None = None  # what help calls its value; the name in capitals if not given

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


# ---- one converter per kind of value; each says what it wanted, the caller adds which flag ----


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r} is not true or false")


def parse_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def port(value: str) -> int:
    """A TCP port, 0-65535 (0: the OS picks one, or the server is off where the help says so)."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise ValueError(f"{value!r} is not a port number (0-65535)")
    return int(text)


def count(value: str) -> int:
    """A whole number, 0 or more."""
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{value!r} is not a whole number")
    return int(text)


def number(value: str) -> float:
    """A finite decimal number, 0 or more."""
    try:
        result = float(value)
    except ValueError:
        result = math.nan
    if not math.isfinite(result) or result < 0:
        raise ValueError(f"{value!r} is not a number")
    return result


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def seconds(value: str) -> float:
    """A duration: seconds, or a number with ms, s, m or h (``90``, ``1.5s``, ``5m``)."""
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration (seconds, or e.g. 500ms, 90s, 5m, 1h)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


_BYTES = re.compile(r"^\s*(\d+)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)


def byte_size(value: str) -> int:
    """Bytes: a whole number, or with kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB."""
    match = _BYTES.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a byte size (e.g. 1048576, 64MiB, 1GiB)")
    unit = (match.group(2) or "b").lower()
    power = "bkmgt".index(unit[0])
    base = 1024 if "i" in unit else 1000
    amount: int = int(match.group(1)) * base**power
    return amount


def path(value: str) -> str:
    """A file system path; empty means unset."""
    if "\0" in value:
        raise ValueError(f"{value!r} is not a path")
    return value


def readable_file(value: str) -> str:
    """An existing, readable file; empty means unset."""
    path(value)
    if value and not os.path.isfile(value):
        raise ValueError(f"{value!r} is not a file")
    if value and not os.access(value, os.R_OK):
        raise ValueError(f"{value!r} cannot be read")
    return value


AE_TITLE_MAX = 16


def ae_title(value: str) -> str:
    """An AE title: 1-16 printable characters, no backslash; outer spaces are not significant."""
    title = value.strip()
    if not title or len(title) > AE_TITLE_MAX or "\\" in title or not title.isprintable():
        raise ValueError(
            f"{value!r} is not an AE title (1-{AE_TITLE_MAX} printable characters, no backslash)"
        )
    return title


def _help(flag: Flag) -> str:
    notes = []
    if flag.choices is not None:
        notes.append("one of " + ", ".join(flag.choices))
    if flag.required:
        notes.append("required")
    elif flag.default is not None and flag.default != ():
        notes.append(f"default: {flag.default}")
    if flag.env_var:
        notes.append(f"env {flag.env}")
    return f"{flag.help} ({'; '.join(notes)})" if notes else flag.help


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    for flag in flags:
        spellings = [f"--{flag.name}"]
        kebab = f"--{flag.name.replace('_', '-')}"
        if kebab != spellings[0]:
            spellings.append(kebab)
        # A boolean may stand alone (``--verbose``), as with the DICOM adapter's flags.
        const = "true" if flag.type is parse_bool else flag.const
        alone: dict[str, Any] = {"nargs": "?", "const": const} if const is not None else {}
        metavar = flag.metavar or flag.name.upper()
        if flag.choices is not None:
            metavar = "{" + ",".join(flag.choices) + "}"
        parser.add_argument(
            *spellings,
            dest=flag.name,
            default=None,
            metavar=metavar,
            help=_help(flag),
            **alone,
        )


def resolve(
    flags: Sequence[Flag], namespace: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Merge command line, environment and defaults into typed values."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    missing: list[Flag] = []
    for flag in flags:
        raw = getattr(namespace, flag.name, None)
        source = f"--{flag.name}"
        if raw is None and flag.env_var and flag.env in env:
            raw, source = env[flag.env], flag.env
        if raw is None or (flag.required and raw == ""):
            if flag.required:
                missing.append(flag)
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
    if missing:  # after the values given, whose errors say more
        raise ConfigError(
            " and ".join(f"--{flag.name}" for flag in missing)
            + (" is" if len(missing) == 1 else " are")
            + " required"
        )
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


def optional(flags: Sequence[Flag], *names: str) -> tuple[Flag, ...]:
    """The same flags with these no longer required, for a command that may do without them."""
    select(flags, *names)
    return tuple(
        dataclasses.replace(flag, required=False) if flag.name in names else flag for flag in flags
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
    """Declare a config field as a setting (``name: int = setting("…", 4, count)``)."""
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
        Flag(name, s.help, s.default, s.type, s.choices, s.required)
        for _, name, s in declared(config)
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
