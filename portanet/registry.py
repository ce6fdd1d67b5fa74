"""One registry for every kind of named thing: names -> objects, and configs -> objects.

Each kind (activations, losses, metrics, regularizers, initializers, schedules, optimizers,
layers) keeps one :class:`Registry`, and its module's ``get`` is a thin call to it. So every
kind spells names the same way, reads configs the same way and fails with the same message.

Names
-----
A name is looked up by its :func:`key`: lower case, without ``_``, ``-`` and spaces, so
``"LeakyReLU"``, ``"leaky_relu"`` and ``"leaky-relu"`` are one name, and a class name
(``"SoftmaxCrossEntropy"``) is also its snake-case name (``"softmax_cross_entropy"``). An
unknown name gets one message everywhere, with the closest known names first
(:func:`difflib.get_close_matches`)::

    unknown activation 'rleu'; did you mean 'relu'? Known: elu, gelu, ..., tanh.

Configs
-------
Every kind writes one config shape, Keras' (``get_config()`` for activations, losses,
optimizers, schedules, initializers and regularizers; ``layers.serialize`` for layers)::

    {"class_name": "Huber", "config": {"reduction": "mean", "delta": 2.0}}

``class_name`` is the name the registry knows the object by (a class name, or an activation's
function name such as ``"leaky_relu"``) and ``config`` holds the constructor's keyword
arguments. A kind may add keys beside these two for state that is not a constructor argument
(a layer's ``"trainable"``, a ``ReduceLROnPlateau``'s ``"state"``). Checkpoints of format
versions 1 and 2 hold two older shapes, which :func:`parse_config` still reads:
``{"class_name": "Adam", **config}`` (optimizers and schedules) and ``{"name": "Huber",
**config}`` (losses and activations).

Examples:
    >>> r = Registry("shape")
    >>> square = r.register("Square", lambda side=1.0: side * side, aliases=("quad",))
    >>> r.resolve("square", side=3.0), r.resolve({"class_name": "Square", "config": {"side": 2.0}})
    (9.0, 4.0)
    >>> r.resolve("sqare")
    Traceback (most recent call last):
    ...
    ValueError: unknown shape 'sqare'; did you mean 'Square'? Known: quad, Square.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from .errors import abridged

__all__ = ["Registry", "key", "make_config", "parse_config"]

_SEPARATORS = str.maketrans("", "", "_- ")


def key(name: str) -> str:
    """The spelling-insensitive form of ``name``: ``"Leaky-ReLU "`` -> ``"leakyrelu"``."""
    return name.strip().lower().translate(_SEPARATORS)


def _a(kind: str) -> str:
    """``kind`` with its article: "an activation", "a loss"."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def make_config(class_name: str, config: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The one config shape: ``{"class_name": class_name, "config": {...}, **extra}``."""
    return {"class_name": class_name, "config": dict(config), **extra}


def parse_config(config: Any, kind: str = "object", *,
                 name_key: bool = True) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(class_name, config, extra)`` from a config dict in any of the three shapes.

    ===========================================  =============================================
    ``{"class_name": n, "config": {...}, ...}``  today's shape; ``extra`` is the other keys
    ``{"class_name": n, **config}``              format 1-2 optimizers and schedules
    ``{"name": n, **config}``                    format 1-2 losses and activations (read only
                                                 when ``name_key``: for layers ``name`` is a
                                                 constructor argument)
    ===========================================  =============================================

    Raises:
        ValueError: not a dict, no class name, a class name that is not a string, or a
            ``config`` entry that is not a dict.

    Examples:
        >>> parse_config({"name": "huber", "delta": 2.0})
        ('huber', {'delta': 2.0}, {})
        >>> parse_config({"class_name": "Dense", "config": {"in_features": 2},
        ...               "trainable": False})
        ('Dense', {'in_features': 2}, {'trainable': False})
    """
    shape = "{'class_name': ..., 'config': {...}}"
    if not isinstance(config, Mapping):
        raise ValueError(f"{_a(kind)} config is a dict {shape}, received {abridged(config)}.")
    rest = dict(config)
    if "class_name" in rest:
        name = rest.pop("class_name")
        if "config" in rest:
            inner = rest.pop("config")
            if not isinstance(inner, Mapping):
                raise ValueError(f"the 'config' of {_a(kind)} config must be a dict, received "
                                 f"{abridged(inner)}.")
            kwargs, extra = dict(inner), rest
        else:  # {"class_name": n, **config}
            kwargs, extra = rest, {}
    elif name_key and "name" in rest:  # {"name": n, **config}
        name = rest.pop("name")
        kwargs, extra = rest, {}
    else:
        raise ValueError(f"{_a(kind)} config is a dict {shape} (as get_config() writes it), "
                         f"received {abridged(config)}: it has no 'class_name' key.")
    if not isinstance(name, str):
        raise ValueError(f"the class_name of {_a(kind)} config must be a string, received "
                         f"{abridged(name)}.")
    return name, kwargs, extra


class Registry(MutableMapping):
    """Named objects of one kind, found by spelling-insensitive name, alias or config.

    :meth:`resolve` turns an identifier into an object; each kind's module-level ``get`` is a
    call to it. As a mapping, a registry holds the registered entries (classes, factories,
    objects) by name: it iterates over each entry's registered name once, and lookups
    (``registry[name]``, ``name in registry``, ``registry.get(name, default)``) accept any
    spelling and the aliases; assigning ``registry[name] = entry`` registers (or replaces) it.

    Args:
        kind: what the entries are, for messages ("activation", "loss", "layer class").
        base: the entries' base class: an instance of it is returned by :meth:`resolve` as is,
            and a subclass is constructed with the parameters.
        wrap: ``wrap(f, **params)`` turns a plain callable into an entry (an activation from
            a function); None: a callable that is not a ``base`` is refused.
        factory: True when the entries are factories (classes, functions) that
            :meth:`resolve` calls with the parameters; False when they are the objects
            themselves (metrics); or a function ``factory(name, entry, params)`` that makes the
            object from an entry (activations: a (forward, derivative, fused) triple).
        name_key: read the old ``{"name": n, **config}`` shape (see :func:`parse_config`).
        accepts: what :meth:`resolve` accepts, for the message that refuses anything else.
        hint: a sentence added to the unknown-name message (how to register one's own).
    """

    def __init__(self, kind: str, *, base: type | None = None,
                 wrap: Callable[..., Any] | None = None,
                 factory: bool | Callable[[str, Any, dict[str, Any]], Any] = True,
                 name_key: bool = True, accepts: str = "", hint: str = ""):
        self.kind = kind
        self.base = base
        self.wrap = wrap
        self.factory = factory
        self.name_key = name_key
        self.accepts = accepts or f"{_a(kind)} name or a config dict"
        self.hint = hint
        self._entries: dict[str, Any] = {}  # registered name -> object
        self._aliases: dict[str, str] = {}  # alias -> registered name
        self._keys: dict[str, str] = {}  # key(name or alias) -> registered name

    # -- registering ---------------------------------------------------------------------------
    def register(self, name: str, obj: Any, aliases: tuple[str, ...] | list[str] = (), *,
                 overwrite: bool = False) -> Any:
        """Add ``obj`` under ``name`` and ``aliases``; returns ``obj``.

        Raises:
            TypeError: a name that is not a non-empty string.
            ValueError: a name (in any spelling) already taken by another entry, unless
                ``overwrite``, which replaces that entry.
        """
        names = [name, *aliases]
        for n in names:
            if not isinstance(n, str) or not key(n):
                raise TypeError(f"{_a(self.kind)} name must be a non-empty string, received "
                                f"{abridged(n)}.")
        for n in names:
            taken = self._keys.get(key(n))
            if taken is None or (taken == name and n != name):  # free, or already this alias
                continue
            if not overwrite:
                raise ValueError(f"{self.kind} {n!r} is already registered (as {taken!r}); "
                                 "pass overwrite=True to replace it, or choose another name.")
            if taken == name:  # the same entry, replaced below
                continue
            if key(taken) == key(n):  # another entry's own name: that entry goes
                self._forget(taken)
            else:  # another entry's alias: only the alias goes
                self._drop_alias(taken, n)
        self._entries[name] = obj
        self._keys[key(name)] = name
        self._add_aliases(name, aliases)
        return obj

    def _add_aliases(self, name: str, aliases: tuple[str, ...] | list[str]) -> None:
        for alias in aliases:
            if not isinstance(alias, str) or not key(alias):
                raise TypeError(f"{_a(self.kind)} alias must be a non-empty string, received "
                                f"{abridged(alias)}.")
            if self._keys.get(key(alias)) != name:  # a new spelling, not one it already has
                self._aliases[alias] = name
                self._keys[key(alias)] = name

    def alias(self, name: str, *aliases: str) -> None:
        """More names for the entry registered as ``name`` (any spelling)."""
        name = self.canonical(name)
        for alias in aliases:
            taken = self._keys.get(key(alias)) if isinstance(alias, str) else None
            if taken is not None and taken != name:
                raise ValueError(f"{self.kind} {alias!r} is already registered (as {taken!r}); "
                                 "choose another alias.")
        self._add_aliases(name, aliases)

    def _drop_alias(self, entry: str, spelling: str) -> None:
        """Remove the alias of ``entry`` that is spelled like ``spelling``."""
        spelled = key(spelling)
        for alias in [a for a, n in self._aliases.items() if n == entry and key(a) == spelled]:
            del self._aliases[alias]
        self._keys.pop(key(spelling), None)

    def _forget(self, name: str) -> None:
        """Remove the entry registered as ``name`` and its aliases."""
        del self._entries[name]
        for alias in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[alias]
        self._keys = {k: n for k, n in self._keys.items() if n != name}

    # -- looking up ----------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The registered name that ``name`` (any spelling, or an alias) stands for.

        Raises:
            ValueError: an unknown name; the message lists the closest known names first.
        """
        if not isinstance(name, str):
            raise ValueError(f"{_a(self.kind)} name must be a string, received {abridged(name)}.")
        found = self._keys.get(key(name))
        if found is None:
            raise ValueError(self._unknown(name))
        return found

    def lookup(self, name: str) -> Any:
        """The registered object (not built) for ``name``."""
        return self._entries[self.canonical(name)]

    def names(self) -> list[str]:
        """Every name :meth:`resolve` accepts, registered names and aliases, sorted
        case-insensitively."""
        return sorted([*self._entries, *self._aliases], key=lambda n: (n.lower(), n))

    def _unknown(self, name: str) -> str:
        known = self.names()
        by_key: dict[str, str] = {}
        for n in known:
            by_key.setdefault(key(n), n)
        close = difflib.get_close_matches(key(name), list(by_key), n=3, cutoff=0.6)
        text = f"unknown {self.kind} {abridged(name, 100)}"
        text += (f"; did you mean {', '.join(repr(by_key[c]) for c in close)}?" if close
                 else ".")
        text += f" Known: {', '.join(known) or 'none'}."
        return f"{text} {self.hint}" if self.hint else text

    # -- building ------------------------------------------------------------------------------
    def resolve(self, identifier: Any, **params: Any) -> Any:
        """The object for a name, a config dict, a ``base`` instance or subclass, or a callable.

        Args:
            identifier: a name (any spelling, or an alias), a config dict in any of the three
                shapes of :func:`parse_config`, an instance of ``base`` (returned as is), a
                subclass of ``base`` (constructed), or a callable (given to ``wrap``).
            **params: keyword arguments for the constructor; they override a config's.

        Raises:
            ValueError: an unknown name, or a malformed config.
            TypeError: parameters the entry does not take, or an identifier of another type.
        """
        if isinstance(identifier, str):
            return self.make(self.canonical(identifier), params)
        if isinstance(identifier, Mapping):
            name, kwargs, extra = parse_config(identifier, self.kind, name_key=self.name_key)
            if extra:
                raise ValueError(f"{_a(self.kind)} config has only 'class_name' and 'config', "
                                 f"received the extra keys {sorted(extra)} in "
                                 f"{abridged(identifier)}.")
            return self.make(self.canonical(name), {**kwargs, **params})
        if self.base is not None and isinstance(identifier, self.base):
            if params:
                raise TypeError(f"get({abridged(identifier, 100)}, ...) received parameters "
                                f"{sorted(params)}, but that {self.kind} is already built; "
                                "construct a new one instead.")
            return identifier
        if (self.base is not None and isinstance(identifier, type)
                and issubclass(identifier, self.base)):
            return self.call(identifier, params, identifier.__name__)
        if callable(identifier) and self.wrap is not None:
            return self.wrap(identifier, **params)
        raise TypeError(f"cannot make {_a(self.kind)} from {abridged(identifier, 100)} "
                        f"({type(identifier).__name__}); pass {self.accepts}.")

    def make(self, name: str, params: Mapping[str, Any]) -> Any:
        """The entry registered as ``name``, built with ``params`` as ``factory`` says."""
        obj = self._entries[name]
        if callable(self.factory):
            return self.factory(name, obj, dict(params))
        if not self.factory:
            if params:
                raise TypeError(f"{self.kind} {name!r} takes no parameters, received "
                                f"{sorted(params)}.")
            return obj
        return self.call(obj, params, name)

    def call(self, factory: Callable[..., Any], params: Mapping[str, Any], name: str) -> Any:
        """``factory(**params)``, after checking the parameters against its signature, so a
        wrong name is reported as such (and a TypeError inside the constructor is not)."""
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # no signature to check against: let it decide
            return factory(**params)
        try:
            signature.bind(**params)
        except TypeError:
            named = [p for p in signature.parameters.values()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            missing = [p.name for p in named
                       if p.default is p.empty and p.name not in params]
            accepted = [p.name for p in named]
            problem = (f"needs the parameters {missing}" if missing else
                       f"received the parameters {sorted(params)}")
            raise TypeError(f"{self.kind} {name!r} {problem}; it accepts {accepted}.") from None
        return factory(**params)

    # -- the mapping ---------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        found = self._keys.get(key(name)) if isinstance(name, str) else None
        if found is None:
            raise KeyError(name)
        return self._entries[found]

    def __setitem__(self, name: str, obj: Any) -> None:
        # ``registry[name] = obj`` replaces that very name; another entry that is merely spelled
        # alike ("_Chain" and "Chain" are one key) is refused, not silently replaced
        taken = self._keys.get(key(name)) if isinstance(name, str) else None
        if taken is not None and taken != name and self._aliases.get(name) != taken:
            raise ValueError(f"{self.kind} {name!r} is the same name as the registered "
                             f"{taken!r} in another spelling; choose another name.")
        self.register(name, obj, overwrite=True)

    def __delitem__(self, name: str) -> None:
        found = self._keys.get(key(name)) if isinstance(name, str) else None
        if found is None:
            raise KeyError(name)
        self._forget(found)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
