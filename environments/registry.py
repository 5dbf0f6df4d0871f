"""Find environment plugins by name through the entry-point group `polyrl.environments` (STYLE.md rule 3).

Built-in environments register exactly like third-party packages, so rl/ never imports one by name:

    [project.entry-points."polyrl.environments"]
    echo = "environments.echo:EchoEnvironment"

>>> load("echo").__name__
'EchoEnvironment'
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points

from environments.base import Environment

GROUP = "polyrl.environments"
_FIX_ENTRY_POINT = (
    f'pip install the plugin package or check the entry point in its pyproject: [project.entry-points."{GROUP}"] '
    'NAME = "module:Class"'
)


class PluginError(RuntimeError):
    """A plugin that cannot be used; the message says what is wrong and how to fix it."""


def _entry_points() -> list[EntryPoint]:
    # importlib.metadata already drops duplicate copies of one distribution (e.g. an egg-info in the cwd).
    return list(entry_points(group=GROUP))


def available() -> dict[str, EntryPoint]:
    """Installed plugins by name (not imported). When two packages claim a name, the first one found wins here
    and `load` of that name fails with both listed."""
    found: dict[str, EntryPoint] = {}
    for ep in _entry_points():
        found.setdefault(ep.name, ep)
    return dict(sorted(found.items()))


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{ep.value} (package {dist.name})" if dist is not None else ep.value


def load(name: str) -> type[Environment]:
    """Import the Environment class registered as `name` and check that it is usable."""
    eps = [ep for ep in _entry_points() if ep.name == name]
    if not eps:
        installed = ", ".join(available()) or "none"
        raise PluginError(f"no environment plugin named {name!r} (installed: {installed}); {_FIX_ENTRY_POINT}")
    if len({ep.value for ep in eps}) > 1:
        claims = "; ".join(_origin(ep) for ep in eps)
        raise PluginError(f"environment name {name!r} is registered by more than one package: {claims}; "
                          "uninstall one of them or rename its entry point")
    ep = eps[0]
    try:
        obj = ep.load()
    except ImportError as e:
        raise PluginError(f"environment plugin {name!r}: importing module {ep.module!r} failed: "
                          f"{type(e).__name__}: {e}; install the plugin's dependencies or fix the module") from e
    except AttributeError as e:
        raise PluginError(f"environment plugin {name!r}: entry point {ep.value!r} names an attribute module "
                          f"{ep.module!r} does not have ({e}); {_FIX_ENTRY_POINT}") from e
    except Exception as e:
        raise PluginError(f"environment plugin {name!r}: importing module {ep.module!r} raised "
                          f"{type(e).__name__}: {e}") from e
    check(obj, name=name, where=ep.value)
    return obj


def check(obj: object, *, name: str, where: str = "") -> None:
    """Raise PluginError unless `obj` is an Environment subclass registered under its own `name`."""
    where = where or getattr(obj, "__qualname__", repr(obj))
    if not (inspect.isclass(obj) and issubclass(obj, Environment)):
        raise PluginError(f"environment plugin {name!r}: {where} is {obj!r}, not a subclass of "
                          "environments.base.Environment; point the entry point at a class that inherits from it")
    if not obj.name:
        raise PluginError(f"environment plugin {name!r}: class {obj.__qualname__} has an empty `name`; "
                          f"set `name = {name!r}` on the class")
    if obj.name != name:
        raise PluginError(f"environment plugin {name!r}: class {obj.__qualname__} has name {obj.name!r} but is "
                          f"registered as {name!r}; make the class attribute and the entry-point name equal "
                          "(it is what --envs selects and what Task.env carries)")
    missing = [m for m in ("load_tasks", "verify", "reference_response")
               if getattr(obj, m) is getattr(Environment, m)]
    if missing:
        raise PluginError(f"environment plugin {name!r}: class {obj.__qualname__} does not implement "
                          f"{', '.join(missing)}; see environments/base.py for what each returns")
    if obj.multi_turn:
        missing = [m for m in ("reset", "step", "verify_episode") if getattr(obj, m) is getattr(Environment, m)]
        if missing:
            raise PluginError(f"environment plugin {name!r}: class {obj.__qualname__} sets multi_turn = True "
                              f"but does not implement {', '.join(missing)}")
