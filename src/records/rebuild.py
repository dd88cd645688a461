"""Rebuilding the suite's objects from a config read from disk (a checkpoint's stored config, a run dir's).

Hydra's `instantiate` calls whatever `_target_` names, so a config that came from a file could make a command
call `builtins.open`, a pathlib method or an unpickling loader. A config read from disk is therefore checked
as a whole before anything is built from it: every `_target_` must be one of the suite's own model classes
(cells, the stack, tasks, embeddings) or one of torch's optimizers and LR schedulers, and no value may hold an
interpolation (`${...}` runs resolvers). The check reads the target as a string: nothing is imported or
called for a target that is not on the list.

A config the user composes on the command line is the user's own and is instantiated as Hydra does; this
module is for what the suite reads back.
"""

from __future__ import annotations

import collections.abc
import functools
import importlib
import inspect
import pkgutil
import types
import typing
from typing import Any

import torch
from hydra.utils import get_class
from torch import nn

from src.common.errors import ConfigError

# The packages whose nn.Module classes a stored config may name.
MODEL_PACKAGES = ("src.models", "src.tasks")


def _modules(package: str) -> list[str]:
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        names.append(info.name)
    return names


@functools.cache
def allowed_targets() -> frozenset[str]:
    """Dotted names a stored config may use as `_target_`."""
    allowed = set()
    for package in MODEL_PACKAGES:
        for name in _modules(package):
            module = importlib.import_module(name)
            for attr, obj in vars(module).items():
                if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == name:
                    allowed.add(f"{name}.{attr}")
    for attr in dir(torch.optim):
        obj = getattr(torch.optim, attr)
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer:
            allowed.add(f"torch.optim.{attr}")
    schedulers = torch.optim.lr_scheduler
    for attr in dir(schedulers):
        obj = getattr(schedulers, attr)
        if (
            inspect.isclass(obj)
            and attr[0] != "_"
            and (issubclass(obj, schedulers.LRScheduler) or obj is schedulers.ReduceLROnPlateau)
            and obj is not schedulers.LRScheduler
        ):
            allowed.add(f"torch.optim.lr_scheduler.{attr}")
    return frozenset(allowed)


def check_stored_config(node: Any, source: str, where: str = "") -> None:
    """Raise ConfigError naming `source` and the key if `node` (plain dicts and lists, as read from a file)
    names a target outside the suite's classes or holds an interpolation."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if not isinstance(key, str) or "${" in key:
                raise ConfigError(
                    f"{source}: stored config key {key!r} is not a plain name; refusing to build "
                    f"from it (the file was not written by rnn-bench, or was edited)"
                )
            if key == "_target_" and not isinstance(value, str):
                raise ConfigError(
                    f"{source}: {path} holds a {type(value).__name__} where a class name belongs; refusing to "
                    f"build from it (the file was not written by rnn-bench, or was edited)"
                )
            if key == "_target_" and value not in allowed_targets():
                raise ConfigError(
                    f"{source}: {path}={value!r} is not one of the suite's classes (cells, stack, "
                    f"tasks, embeddings, torch optimizers and schedulers); refusing to build it. "
                    f"Use a checkpoint written by rnn-bench's src.train"
                )
            check_stored_config(value, source, path)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_stored_config(value, source, f"{where}[{i}]")
    elif isinstance(node, str):
        if "${" in node:
            raise ConfigError(
                f"{source}: {where}={node!r} holds an interpolation, which a stored config never "
                f"does (they are resolved before saving); refusing to build from it"
            )
    elif not (node is None or isinstance(node, (bool, int, float))):
        raise ConfigError(
            f"{source}: {where} holds a {type(node).__name__}, not a config value; refusing to build from it"
        )


def rebuild(node: dict, source: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(node, **kwargs)` for a config read from `source`, after check_stored_config."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if not isinstance(node, dict):
        raise ConfigError(
            f"{source}: the stored config is a {type(node).__name__}, not a mapping; refusing to build from it"
        )
    check_stored_config(node, source)
    check_stored_types(node, source)
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        first = str(e).splitlines()[0].rstrip(":")
        raise ConfigError(
            f"{source}: the stored config does not build: {first}: {type(cause).__name__}: "
            f"{str(cause).strip().splitlines()[0] if str(cause).strip() else '(no message)'}"
        ) from None


def _accepts(hint: Any, value: Any) -> bool | None:
    """Whether `value` (as read from a file) fits the annotation `hint`; None where the hint says nothing checkable."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(h, value) for h in typing.get_args(hint)]
        return None if None in verdicts else any(verdicts)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is collections.abc.Callable or origin is collections.abc.Callable:
        return isinstance(value, dict) and "_target_" in value  # a class to build: a node with its _target_
    return None


def check_stored_types(node: Any, source: str, where: str = "") -> None:
    """Each value of a node with a `_target_` (already checked to be one of the suite's classes) against the
    type its class's __init__ declares: a wrong type is refused naming its key, before instantiate would fail
    deep inside the class with a message that names none."""
    if isinstance(node, list):
        for i, value in enumerate(node):
            check_stored_types(value, source, f"{where}[{i}]")
        return
    if not isinstance(node, dict):
        return
    hints: dict[str, Any] = {}
    if isinstance(node.get("_target_"), str):
        for cls in get_class(node["_target_"]).__mro__:  # a subclass may pass its settings on as **kwargs
            try:
                hints = {**typing.get_type_hints(cls.__init__), **hints}
            except Exception:  # a hint that does not resolve: nothing to check against
                continue
    for key, value in node.items():
        path = f"{where}.{key}" if where else str(key)
        if key in hints and _accepts(hints[key], value) is False:
            wanted = getattr(hints[key], "__name__", None) or str(hints[key]).replace("typing.", "")
            if _accepts(collections.abc.Callable, value) is False and "Callable" in wanted:
                wanted = "a config node with a _target_"
            raise ConfigError(
                f"{source}: {path}={value!r} does not fit {node['_target_']}'s {key} ({wanted}); refusing to "
                f"build from it (the file was not written by rnn-bench, or was edited)"
            )
        check_stored_types(value, source, path)
