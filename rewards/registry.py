"""The reward-function registry and loader.

``load_reward`` accepts a registered name (``exact_match``), an import string
(``package.module:function``) or a file (``path/to/file.py:function``), checks that it is callable
and binds per-reward keyword arguments, so config and CLI only ever deal in strings.

A name may also resolve to a *class* whose instances are reward functions (``__call__`` with the
TRL signature): ``load_reward`` then returns ``cls(**kwargs)``, so a stateful reward (a T2I
generator plus image scorers) loads its models once, in the process that calls it (one Ray actor).
``check_reward`` runs the same checks without instantiating, for validating configs cheaply.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from rewards.contract import RewardFunc
from rl.registry import Registry, RegistryError

REWARDS: Registry[RewardFunc] = Registry("reward function")

# Built-ins registered lazily by import string: listing names costs no import.
for _name in ("letter_fraction", "exact_match", "completion_length", "length_penalty"):
    REWARDS.register(_name, f"rewards.builtin:{_name}")
# Class-based rewards: instantiated with the kwargs by load_reward (models load once per actor).
REWARDS.register("t2i_image_reward", "rewards.t2i.image_reward:ImageReward")


def reward_name(fn: Any) -> str:
    """A readable name for a reward function, a partial of one, or a callable object."""
    name = getattr(fn, "__name__", None)
    if name:
        return str(name)
    if isinstance(fn, functools.partial):
        return reward_name(fn.func)
    return type(fn).__name__


def is_async_reward(fn: Any) -> bool:
    """True for ``async def`` functions, partials of them, and objects with an async ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    return callable(fn) and not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


def _resolve(name_or_spec: Any) -> Any:
    if not isinstance(name_or_spec, str) or not name_or_spec.strip():
        raise RegistryError(f"reward {name_or_spec!r} must be a non-empty name or import string")
    obj = REWARDS.resolve(name_or_spec.strip())
    if inspect.isclass(obj):
        if not any("__call__" in vars(k) for k in obj.__mro__):
            raise RegistryError(
                f"reward {name_or_spec!r} resolves to class {obj.__name__}, whose instances are not callable; "
                "give it __call__(self, prompts, completions, completion_ids=None, **columns) or point at a function"
            )
    elif not callable(obj):
        raise RegistryError(
            f"reward {name_or_spec!r} resolves to a {type(obj).__name__}, not a callable; point it at a function"
        )
    return obj


def check_reward(name_or_spec: str, kwargs: dict[str, Any] | None = None) -> None:
    """Every check ``load_reward`` makes, without instantiating a class (no model is loaded)."""
    obj = _resolve(name_or_spec)
    if kwargs or inspect.isclass(obj):
        _check_kwargs(name_or_spec, obj, kwargs or {})


def load_reward(name_or_spec: str, kwargs: dict[str, Any] | None = None) -> RewardFunc:
    """Resolve a reward by name or import string and bind ``kwargs`` to it.

    A function gets ``kwargs`` bound with ``functools.partial``; a class is instantiated with them
    (``cls(**kwargs)``) and the instance is the reward. Raises ``RegistryError`` (a ``ValueError``)
    naming the spec and the fix when it does not resolve, is not callable, or does not accept the
    given keyword arguments; errors raised by a class's ``__init__`` propagate unchanged.
    """
    fn = _resolve(name_or_spec)
    if inspect.isclass(fn):
        _check_kwargs(name_or_spec, fn, kwargs or {})
        return fn(**(kwargs or {}))
    if not kwargs:
        return fn
    _check_kwargs(name_or_spec, fn, kwargs)
    bound = functools.partial(fn, **kwargs)
    # partial has no __name__; metrics and logs name rewards by it, so keep the function's.
    bound.__name__ = reward_name(fn)  # type: ignore[attr-defined]
    bound.__qualname__ = getattr(fn, "__qualname__", bound.__name__)  # type: ignore[attr-defined]
    bound.__doc__ = getattr(fn, "__doc__", None)
    return bound


def _check_kwargs(spec: str, fn: Any, kwargs: dict[str, Any]) -> None:
    """Fail at load time, not on the first batch, when the function (or class) cannot take ``kwargs``."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and some C callables have no signature: trust the user
        return
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise RegistryError(
            f"reward {spec!r} does not accept keyword argument(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(accepted)) or '(none)'}; fix the reward's kwargs"
        )
