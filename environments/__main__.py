"""Environment plugin tools.

    python -m environments list [--tasks]      installed plugins: name, version, multi_turn, module
    python -m environments new NAME [--dir .]  a ready-to-install plugin package (see the README, "Add a verifier as an environment plugin")
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from string import Template

from environments import registry

TEMPLATE_DIR = Path(__file__).resolve().parent / "template"
# Lower-case identifier: it is the entry-point name, part of the module name and what --envs selects.
_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_list(args: argparse.Namespace) -> int:
    header = ["NAME", "VERSION", "MULTI_TURN", "MODULE"] + (["TASKS"] if args.tasks else [])
    rows, errors = [header], []
    for name, ep in registry.available().items():
        try:
            cls = registry.load(name)
            row = [name, cls.version, str(cls.multi_turn), ep.module]
            if args.tasks:
                row.append(str(len(cls({}, 0).load_tasks())))
        except Exception as e:  # keep listing the others; report each broken plugin below
            errors.append(f"{name}: {e}")
            row = [name, "?", "?", ep.module] + (["?"] if args.tasks else [])
        rows.append(row)
    print(_table(rows) if len(rows) > 1 else f"no environment plugins installed (entry-point group {registry.GROUP})")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_new(args: argparse.Namespace) -> int:
    name = args.name
    if not _NAME.fullmatch(name):
        print(f"error: {name!r} is not a valid plugin name: use a lower-case Python identifier "
              "(letters, digits, underscores; not starting with a digit), e.g. my_env", file=sys.stderr)
        return 2
    if name in registry.available():
        print(f"error: a plugin named {name!r} is already installed ({registry.available()[name].value}); "
              "choose another name", file=sys.stderr)
        return 2
    dist = "polyrl-env-" + name.replace("_", "-")
    fields = {"name": name, "dist": dist, "module": f"polyrl_env_{name}",
              "class_name": "".join(p.capitalize() for p in name.split("_")) + "Environment"}
    dest = Path(args.dir) / dist
    if dest.exists() and any(dest.iterdir()):
        print(f"error: {dest} already exists and is not empty; pick another --dir", file=sys.stderr)
        return 2
    files = {"pyproject.toml": "pyproject.toml.tmpl", "README.md": "README.md.tmpl",
             f"{fields['module']}.py": "module.py.tmpl", f"tests/test_{name}.py": "test_module.py.tmpl"}
    for out, template in files.items():
        path = dest / out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template((TEMPLATE_DIR / template).read_text()).substitute(fields))
    print(f"wrote {dest}/ ({', '.join(files)})\n"
          f"next:\n"
          f"  1. edit load_tasks and verify in {dest / (fields['module'] + '.py')}\n"
          f"  2. pip install -e {dest}\n"
          f"  3. python -m environments list            # {name} is listed\n"
          f"  4. python -m environments.serve {name}     # serve it over HTTP\n"
          f"  5. python rl/train.py --envs {name}        # train on it")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m environments", description="polyrl environment plugin tools")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list installed environment plugins")
    ls.add_argument("--tasks", action="store_true", help="also load each plugin's tasks and count them")
    ls.set_defaults(run=cmd_list)
    new = sub.add_parser("new", help="write a new plugin package from the template")
    new.add_argument("name", help="plugin name: a lower-case Python identifier")
    new.add_argument("--dir", default=".", help="parent directory of the new package (default: .)")
    new.set_defaults(run=cmd_new)
    args = p.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
