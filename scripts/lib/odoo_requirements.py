"""Turn an Odoo 18.0 requirements.txt into pins that install as wheels here.

Odoo pins old releases for Python 3.10/3.11 (Debian/Ubuntu LTS versions), many of
which have no wheels and need system headers to build.  The pins Odoo chose for
Python 3.12 (Ubuntu Noble) all ship cp311 wheels, so on 3.11 we evaluate the
environment markers as if the interpreter were 3.12.  psycopg2 is swapped for
psycopg2-binary and python-ldap (optional, needs libldap headers) is dropped.

Usage: python3 odoo_requirements.py REQUIREMENTS_TXT > pins.txt
"""

import sys

try:
    from packaging.markers import Marker
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # a bare interpreter: pip always vendors packaging
    from pip._vendor.packaging.markers import Marker
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement

SKIP = {"python-ldap", "pypiwin32", "rl-renderpm"}
RENAME = {"psycopg2": "psycopg2-binary"}


def _marker_env():
    env = {}
    major, minor = sys.version_info[:2]
    if (major, minor) < (3, 12):
        env["python_version"] = "3.12"
        env["python_full_version"] = "3.12.0"
    return env


def convert(lines):
    env = _marker_env()
    out = []
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise SystemExit(f"cannot parse Odoo requirement {line!r}: {exc}") from exc
        if req.marker and not Marker(str(req.marker)).evaluate(env):
            continue
        name = req.name.lower()
        if name in SKIP:
            continue
        name = RENAME.get(name, req.name)
        out.append(f"{name}{req.specifier}")
    return out


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as fh:
        print("\n".join(convert(fh)))
