"""One registry of backends and one resident cache for every model the project loads.

Roles: `generator` (generate), `understander` (answer), `similarity` (similarity / embed). A backend
module registers one factory per role with `@register(role, name, params=...)`; it is imported on first
use (`BACKEND_MODULES`), so heavy dependencies load only when a config names the backend. Backends
choose their own entry points: no config value names code to import.

`params` declares every key the backend reads from `spec.params`; `check_spec` refuses any other key
(RunConfig calls it when a config is validated, `get` before anything loads), so a typo or a
credential under an unread name fails at once instead of landing in thought keys and releases.

`get(role, spec)` builds the backend once per process per spec and hands out a `Resident`: every
call through it runs under the lock of the model it runs on, so no model is ever called from two
threads at once (a diffusers pipeline keeps its scheduler's step on the object), and is timed
inside that lock (`timed`), so a call's seconds never include waiting for another thread.

A unified model serves two roles from one load: its role objects load the network through
`shared(key, loader)` and name that key as their `model_key`; both role handles then take the
same lock.
"""
from __future__ import annotations

import importlib
import threading
import time
from typing import Any, Callable, Iterable

from g2u_tasks.config import ModelSpec

ROLES = ("generator", "understander", "similarity")
_UNIFIED = {"janus": "g2u_tasks.backends.unified.janus", "bagel": "g2u_tasks.backends.unified.bagel"}
# role -> backend name -> module that registers it
BACKEND_MODULES: dict[str, dict[str, str]] = {
    "generator": {
        "reference": "g2u_tasks.backends.generators.reference",
        "diffusers": "g2u_tasks.backends.generators.diffusers_backend",
        "openai": "g2u_tasks.backends.generators.openai_backend",
        **_UNIFIED,
    },
    "understander": {
        "transformers": "g2u_tasks.backends.understanders.transformers_backend",
        "openai": "g2u_tasks.backends.understanders.openai_backend",
        **_UNIFIED,
    },
    "similarity": {"transformers": "g2u_tasks.backends.similarity"},
}

# Params the core reads for every backend of a role; the backend itself never sees them
# (materialisation strips `degrade` and applies it to the backend's output).
ROLE_PARAMS: dict[str, frozenset[str]] = {"generator": frozenset({"degrade"})}

_FACTORIES: dict[tuple[str, str], Callable[[ModelSpec], Any]] = {}
_PARAMS: dict[tuple[str, str], frozenset[str]] = {}  # (role, backend) -> the params it accepts
_HANDLES: dict[tuple[str, str], "Resident"] = {}  # (role, spec key) -> handle
_SHARED: dict[str, Any] = {}  # model key -> a model loaded once for several role objects
_MODEL_LOCKS: dict[str, threading.RLock] = {}  # model key -> the lock every call to that model takes
_LOAD_LOCK = threading.RLock()  # held while loading: a second caller waits, then reuses the load


class Resident:
    """A loaded backend as the registry hands it out. Calls go through the model's lock and are
    timed inside it; other attributes read through to the backend (diagnostics, tests)."""

    def __init__(self, role: str, backend: Any, lock: threading.RLock):
        self.role, self.backend, self.lock = role, backend, lock
        self.name: str = getattr(backend, "name", role)
        self.notes: str | None = getattr(backend, "notes", None)

    def __getattr__(self, attr: str) -> Any:  # only reached for names the handle lacks
        if attr == "backend" or attr.startswith("__"):  # not yet set (copy, unpickle): no recursion
            raise AttributeError(attr)
        return getattr(self.backend, attr)

    def __repr__(self) -> str:
        return f"Resident({self.role}, {self.backend!r})"

    def timed(self, method: str, *args: Any) -> tuple[Any, float]:
        """(result, seconds the call itself took), the model held for the whole call."""
        with self.lock:
            t0 = time.perf_counter()
            out = getattr(self.backend, method)(*args)
            return out, time.perf_counter() - t0

    def generate(self, batch: list) -> list:
        return self.timed("generate", batch)[0]

    def answer(self, batch: list) -> list[str]:
        return self.timed("answer", batch)[0]

    def similarity(self, sources: list, thoughts: list) -> list[float]:
        return self.timed("similarity", sources, thoughts)[0]

    def embed(self, images: list):
        return self.timed("embed", images)[0]


def register(role: str, name: str, params: Iterable[str] = ()):
    """Decorator: `@register("generator", "x", params={"steps"})` makes backend "x" build the role object
    from a ModelSpec whose params are among `params` (any other key is refused by `check_spec`)."""
    if role not in ROLES:
        raise ValueError(f"unknown backend role {role!r}; known: {', '.join(ROLES)}")
    accepted = frozenset(params) if not isinstance(params, str) else frozenset({params})

    def deco(factory):
        _FACTORIES[(role, name)] = factory
        _PARAMS[(role, name)] = accepted
        return factory

    return deco


def known_backends(role: str) -> list[str]:
    return sorted(set(BACKEND_MODULES.get(role, {})) | {n for r, n in _FACTORIES if r == role})


def _factory(role: str, backend: str) -> Callable[[ModelSpec], Any]:
    if (role, backend) not in _FACTORIES and backend in BACKEND_MODULES.get(role, {}):
        importlib.import_module(BACKEND_MODULES[role][backend])
    if (role, backend) not in _FACTORIES:
        raise ValueError(f"unknown {role} backend {backend!r}; known: {', '.join(known_backends(role))}")
    return _FACTORIES[(role, backend)]


def accepted_params(role: str, backend: str) -> frozenset[str]:
    """Every param key a spec for `backend` in `role` may carry (an unknown backend is an error)."""
    _factory(role, backend)
    return _PARAMS[(role, backend)] | ROLE_PARAMS.get(role, frozenset())


def check_spec(role: str, spec: ModelSpec, where: str | None = None) -> ModelSpec:
    """`spec` if its backend exists in `role` and accepts each of its params; else one ValueError line
    naming the backend, the key and the accepted keys. `where`: the config key that holds the spec."""
    accepted = accepted_params(role, spec.backend)
    unknown = sorted(set(spec.params) - accepted)
    if unknown:
        raise ValueError(
            f"{where + ': ' if where else ''}{role} backend {spec.backend!r} does not accept param"
            f"{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(accepted)) or '(none)'}")
    return spec


def describe(role: str, spec: ModelSpec) -> str | None:
    """The notes a run records for `spec` without loading it: its backend's `describe(spec)`; None for a
    backend without one (its notes come with a load)."""
    describe_spec = getattr(_factory(role, spec.backend), "describe", None)
    return describe_spec(check_spec(role, spec)) if describe_spec else None


def get(role: str, spec: ModelSpec) -> Resident:
    """The process's resident `role` object for `spec`, built on first use (after `check_spec`)."""
    key = (role, spec.cache_key())
    with _LOAD_LOCK:
        if key not in _HANDLES:
            check_spec(role, spec)
            backend = _factory(role, spec.backend)(spec)
            model_key = getattr(backend, "model_key", None) or f"{role}:{key[1]}"
            _HANDLES[key] = Resident(role, backend, _MODEL_LOCKS.setdefault(model_key, threading.RLock()))
        return _HANDLES[key]


def shared(model_key: str, loader: Callable[[], Any]) -> Any:
    """`loader()` once per process per `model_key`; role objects that share it set `model_key`."""
    with _LOAD_LOCK:
        if model_key not in _SHARED:
            _SHARED[model_key] = loader()
        return _SHARED[model_key]


def resident_count(role: str | None = None) -> int:
    """How many role objects are resident (in one role, or all)."""
    with _LOAD_LOCK:
        return sum(role is None or r == role for r, _ in _HANDLES)


def clear() -> None:
    """Drop every resident model (tests, memory pressure); registrations stay."""
    with _LOAD_LOCK:
        _HANDLES.clear()
        _SHARED.clear()
        _MODEL_LOCKS.clear()


def get_generator(spec: ModelSpec) -> Resident:
    return get("generator", spec)


def get_understander(spec: ModelSpec) -> Resident:
    return get("understander", spec)


def get_similarity(spec: ModelSpec) -> Resident:
    return get("similarity", spec)
