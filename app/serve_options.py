"""The options of `eddy serve`, generated from the one `Settings` class: each field is a flag
with the field's description, its default and its EDDY_* variable in the help, so a new setting
is a new flag without restating it here.

The flags only carry what was typed: a flag left out stays None and `Settings` fills it from its
EDDY_* variable or its default (pydantic-settings is the one place environment variables are
read and validated, so a bad value gets the same message from a flag and from a variable).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic.fields import FieldInfo

from eddy.app.settings import Settings


def env_name(name: str) -> str:
    prefix = Settings.model_config.get("env_prefix", "")
    return f"{prefix}{name}".upper()


def _plain_type(annotation: Any) -> Any:
    """`X | None` -> X (every flag is optional anyway)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def default_text(field: FieldInfo) -> str | None:
    default = field.get_default(call_default_factory=True)
    if default is None:
        return None
    if isinstance(default, bool):
        return "on" if default else "off"
    if default == "":
        return '""'
    return str(default)


def help_text(name: str, field: FieldInfo) -> str:
    """The description with click's usual "[env var: ...; default: ...]" suffix (click shows
    an env var only when it reads it itself; here `Settings` does)."""
    extra = [f"env var: {env_name(name)}"]
    if (default := default_text(field)) is not None:
        extra.append(f"default: {default}")
    return f"{field.description or ''}  [{'; '.join(extra)}]"


def setting_parameter(name: str, field: FieldInfo) -> inspect.Parameter:
    kind = _plain_type(field.annotation)
    flag = "--" + name.replace("_", "-")
    options: dict[str, Any] = {"help": help_text(name, field), "show_default": False}
    if kind is bool:
        option = typer.Option(f"{flag}/--no-{flag[2:]}", **options)
    elif typing.get_origin(kind) is list:  # repeatable: --flag a --flag b
        option, kind = typer.Option(flag, **options), list[str]
    elif typing.get_origin(kind) is typing.Literal:
        # Checked by Settings (one message for flag and variable); the metavar lists them.
        choices = "|".join(str(c) for c in typing.get_args(kind))
        option, kind = typer.Option(flag, metavar=f"[{choices}]", **options), str
    else:
        option = typer.Option(flag, **options)
        if kind not in (int, float, Path):
            kind = str  # parsed by Settings
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, option],
    )


def with_setting_options(function: Callable[..., None]) -> Callable[..., None]:
    """Gives `function(**flags)` one keyword parameter per setting, for typer to read."""
    parameters = [setting_parameter(n, f) for n, f in Settings.model_fields.items()]
    function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return function
