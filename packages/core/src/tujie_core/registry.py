"""Name → factory registries, in the style of timm's ``register_model`` / ``create_model``.

Packages outside core add entries either by importing core's registry and decorating a function, or by
declaring an entry point in the group ``tujie.<kind>`` (for example ``tujie.models``); entry points are loaded
lazily the first time a name is missing, so core never imports a domain package.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from typing import Any, Generic, TypeVar

from pydantic import ConfigDict, ValidationError, create_model

from tujie_core.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])


def suggest(name: str, choices: list[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """A named collection of factories with validated keyword arguments."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group or f"tujie.{kind}"
        self._entries: dict[str, T] = {}
        self._namespaces: dict[str, Callable[..., Any]] = {}
        self._entry_points_loaded = False
        self.broken: dict[str, str] = {}  # entry-point name → why it failed to load
        self._tried: set[tuple[str, str]] = set()  # entry points loaded (or failed) already
        self._loading = threading.RLock()  # one thread loads entry points; the others wait for what it registers

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@MODELS.register()`` registers under the function's name, or ``name``."""

        def decorator(obj: T) -> T:
            self._add(name or obj.__name__, obj)
            return obj

        return decorator

    def register_namespace(self, prefix: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``factory(name, **kwargs)`` serves every ``"<prefix>/<name>"`` (a whole model library under
        one prefix: ``timm/resnet18``). An entry point whose object has ``tujie_namespace = True`` does the same
        under the entry point's name."""

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            known = self._namespaces.get(prefix)
            if known is not None and known is not factory:
                raise ConfigError(
                    f"{self.kind} namespace '{prefix}/' is registered twice: by {_owner(known)} "
                    f"and by {_owner(factory)}"
                )
            self._namespaces[prefix] = factory
            return factory

        return decorator

    def _from_namespace(self, name: str) -> T | None:
        prefix, sep, rest = name.partition("/")
        factory = self._namespaces.get(prefix) if sep and rest else None
        if factory is None:
            return None
        served = functools.partial(factory, rest)
        functools.update_wrapper(served, factory)
        del served.__wrapped__  # the signature is the partial's: without the bound name
        return served  # type: ignore[return-value]

    def _add(self, key: str, obj: T) -> None:
        known = self._entries.get(key)
        if known is not None and known is not obj:
            raise ConfigError(
                f"{self.kind} '{key}' is registered twice: by {_owner(known)} and by {_owner(obj)}; rename one"
            )
        self._entries[key] = obj

    def _load_entry_points(self) -> None:
        """Load the group's entry points once; a broken one is reported with its package and skipped, so the
        others still load."""
        with self._loading:
            if self._entry_points_loaded:
                return
            for ep in metadata.entry_points(group=self.entry_point_group):
                self._load_one(ep)
            self._entry_points_loaded = True  # only now: a failure above must not hide the entries after it

    def _load_named(self, name: str) -> None:
        """Load only the entry points that can serve ``name`` (its own, or its namespace's): looking up one model
        need not import every domain package (health's imaging models import MONAI, seconds)."""
        with self._loading:
            if not self._entry_points_loaded:
                wanted = {name, name.partition("/")[0]}
                for ep in metadata.entry_points(group=self.entry_point_group):
                    if ep.name in wanted:
                        self._load_one(ep)

    def _load_one(self, ep: metadata.EntryPoint) -> None:
        if (ep.name, ep.value) in self._tried:
            return
        self._tried.add((ep.name, ep.value))
        try:
            obj = ep.load()
        except Exception as exc:
            package = ep.dist.name if ep.dist is not None else ep.module
            self.broken[ep.name] = f"{package}: {type(exc).__name__}: {exc}"
            warnings.warn(
                f"tujie: skipping {self.kind} '{ep.name}' from {package} ({type(exc).__name__}: {exc})", stacklevel=3
            )
            return
        if getattr(obj, "tujie_namespace", False):
            self.register_namespace(ep.name)(obj)
        elif callable(obj):
            self._add(ep.name, obj)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        if name not in self._entries and self._from_namespace(name) is None:
            self._load_named(name)
        if name not in self._entries and self._from_namespace(name) is None:
            self._load_entry_points()
        if name not in self._entries and (served := self._from_namespace(name)) is not None:
            return served
        if name not in self._entries:
            names = self.names()
            if name in self.broken:
                raise ConfigError(f"{self.kind} '{name}' could not be loaded ({self.broken[name]})")
            spaces = "".join(f", {prefix}/<name>" for prefix in sorted(self._namespaces))
            raise ConfigError(
                f"'{name}' is not in the {self.kind} registry{suggest(name, names)}; "
                f"available: {', '.join(names) or 'none'}{spaces}"
            )
        return self._entries[name]

    def create(
        self, name: str, /, *, where: str | None = None, runtime: Mapping[str, Any] | None = None, **params: Any
    ) -> Any:
        """Build ``name`` with ``params`` (checked against its signature and coerced) and ``runtime``
        objects (a model, an optimizer: passed as they are).

        ``where`` prefixes error messages (for example ``"model"``) so a config error names its field.
        """
        factory = self.get(name)
        runtime = dict(runtime or {})
        validated = validate_kwargs(factory, params, where=where or self.kind, skip=tuple(runtime))
        return factory(**validated, **runtime)


def _owner(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _signature_model(fn: Callable[..., Any], skip: tuple[str, ...], optional: tuple[str, ...]) -> type:
    fields: dict[str, Any] = {}
    accepts_any = False
    try:
        parameters = inspect.signature(fn, eval_str=True).parameters.values()
    except Exception:  # annotations that cannot be evaluated here: check names only
        parameters = [p.replace(annotation=p.empty) for p in inspect.signature(fn).parameters.values()]
    for param in parameters:
        if param.name in skip or param.kind is param.VAR_POSITIONAL:
            continue
        if param.kind is param.VAR_KEYWORD:
            accepts_any = True
            continue
        annotation = param.annotation if param.annotation is not param.empty else Any
        default = param.default if param.default is not param.empty else (None if param.name in optional else ...)
        fields[param.name] = (annotation, default)
    config = ConfigDict(extra="allow" if accepts_any else "forbid", arbitrary_types_allowed=True)
    try:
        model = create_model(f"{getattr(fn, '__name__', 'factory')}_kwargs", __config__=config, **fields)
    except Exception:  # annotations pydantic cannot build a schema for: check names only
        fields = {k: (Any, v[1]) for k, v in fields.items()}
        model = create_model(f"{getattr(fn, '__name__', 'factory')}_kwargs", __config__=config, **fields)
    return model


def validate_kwargs(
    fn: Callable[..., Any],
    kwargs: Mapping[str, Any],
    *,
    where: str,
    skip: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Check ``kwargs`` against ``fn``'s signature; raise ConfigError naming ``where.key`` on a problem.

    ``skip``: parameters the caller fills in later (not checked); ``optional``: required parameters that may
    still be left out here.
    """
    model = _signature_model(fn, skip, optional)
    try:
        parsed = model(**kwargs)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where, list(model.model_fields))) from None
    return {k: getattr(parsed, k) for k in parsed.model_fields_set}


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the pydantic model found by following ``loc`` (minus its last part) from ``model``."""
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = fields[part].annotation
        model = next((a for a in getattr(model, "__args__", ()) if hasattr(a, "model_fields")), model)
    return list(getattr(model, "model_fields", {}))


def format_validation_error(exc: ValidationError, prefix: str, known: list[str] | Any = None) -> str:
    """One line per problem: ``prefix.field: message``.

    ``known``: the valid keys, or the root pydantic model (its nested fields are looked up), for suggestions.
    """
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            choices = known if isinstance(known, list) else _fields_at(known, err["loc"])
            hint = suggest(key, choices)
            lines.append(f"{loc}: unknown key{hint}")
        elif err["type"] == "missing":
            lines.append(f"{loc}: required key is missing")
        else:
            lines.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)
