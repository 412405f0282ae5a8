"""How Lapse declares an actor: arguments validated at the boundary, retry policy in options.

A message whose arguments can never be processed (wrong count, wrong type, a
non-positive id or amount, an unknown enum value) raises ``InvalidArguments``,
a permanent error: it goes to the dead-letter archive at once instead of being
retried twenty times, and never crashes the worker.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args, get_origin

import dramatiq

from domain.errors import InvalidArguments, PermanentError
from lapse.platform.brokers import broker

F = TypeVar("F", bound=Callable[..., Any])

_POSITIVE = ("_id", "amount")


def _check(actor_name: str, name: str, hint: Any, value: Any) -> None:
    origin, options = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in options:
            return
        hint = next(o for o in options if o is not type(None))
        origin, options = get_origin(hint), get_args(hint)
    if origin is Literal:
        if value not in options:
            allowed = ", ".join(map(repr, options))
            raise InvalidArguments(actor_name, f"{name} must be one of {allowed}, got {value!r}")
        return
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidArguments(actor_name, f"{name} must be an integer, got {value!r}")
        if name.endswith(_POSITIVE) and value <= 0:
            raise InvalidArguments(actor_name, f"{name} must be positive, got {value}")
        return
    if hint is str:
        if not isinstance(value, str) or not value.strip():
            raise InvalidArguments(actor_name, f"{name} must be a non-empty string, got {value!r}")
        return
    if hint is dict and not isinstance(value, dict):
        raise InvalidArguments(actor_name, f"{name} must be an object, got {value!r}")


def validated(actor_name: str, fn: F) -> F:
    """Wrap ``fn`` so its call arguments are checked against its annotations first."""
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise InvalidArguments(actor_name, str(error)) from None
        for name, value in bound.arguments.items():
            _check(actor_name, name, hints.get(name, Any), value)
        return fn(*bound.args, **bound.kwargs)

    return typing.cast(F, checked)


def lapse_actor(
    *,
    queue_name: str = "default",
    max_retries: int = 10,
    min_backoff: int = 10_000,
    max_backoff: int = 3_600_000,
    time_limit: int = 300_000,
    **options: Any,
) -> Callable[[F], dramatiq.Actor[Any, Any]]:
    """Declare a Lapse actor named after its function, with validated arguments.

    The broker is passed explicitly: relying on dramatiq's global broker would
    silently bind an actor to a default Redis broker if a module were imported
    before ``lapse.platform.brokers``.
    """

    def decorate(fn: F) -> dramatiq.Actor[Any, Any]:
        declare = dramatiq.actor(
            broker=broker,
            actor_name=fn.__name__,
            queue_name=queue_name,
            max_retries=max_retries,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            time_limit=time_limit,
            throws=(PermanentError,),
            **options,
        )
        return declare(validated(fn.__name__, fn))

    return decorate
