"""Run Starlette's, FastAPI's and Flask's own test suites plain and with the middleware injected; compare.

Usage: ``scripts/framework-suites [--only starlette,fastapi,flask] [--workdir DIR] [-- PYTEST_ARGS]``

For each framework: download its sdist from PyPI (``pip download --no-binary :all: --no-deps``) at
the version pinned in this project's ``dev`` extra, install its test dependencies (its
``[dependency-groups]``, best effort: a test that needs a missing package fails the same way in
both runs), run its suite twice in one virtualenv, once plain and once with ``audit_inject`` (every
app the suite builds wrapped in ``AuditMiddleware`` / ``AuditWSGIMiddleware``), and compare the
outcome of every test. Exit status 1 if any test's outcome differs. Slow (minutes per suite): run it
before a release, not on every commit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import venv
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
FRAMEWORKS = ("starlette", "fastapi", "flask")
GROUPS = {"starlette": ["dev"], "fastapi": ["tests"], "flask": ["tests"]}
# Packages of a suite's dev group that a test run does not need (linters, release tools, benchmarks).
SKIP = re.compile(r"^(mypy|ruff|ty|twine|pytest-codspeed|coverage|prek|zizmor|playwright|types-.*|tox.*)\b", re.I)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=False, **kwargs)  # type: ignore[call-overload,no-any-return]


def pinned(name: str) -> str | None:
    """The version of ``name`` pinned (``==``) in this project's dev extra, if any."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project.get("optional-dependencies", {}).get("dev", []):
        match = re.fullmatch(rf"{name}\s*==\s*([\w.]+)", requirement.strip(), re.I)
        if match:
            return match.group(1)
    return None


def group(pyproject: dict[str, object], name: str) -> list[str]:
    """A dependency group with its ``include-group`` entries expanded (pip 23 knows no groups)."""
    groups = pyproject.get("dependency-groups", {})
    assert isinstance(groups, dict)
    out: list[str] = []
    for item in groups.get(name, []):
        if isinstance(item, dict):
            out.extend(group(pyproject, item["include-group"]))
        elif not SKIP.match(item):
            out.append(item)
    return out


def locked(source: Path, requirements: list[str]) -> list[str]:
    """``requirements`` pinned to the versions the sdist's ``uv.lock`` names (the newest, if it names several).

    A suite is written against its lock: the newest pytest can lack what an older suite imports.
    """
    try:
        packages = tomllib.loads((source / "uv.lock").read_text())["package"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return requirements
    versions: dict[str, tuple[int, ...]] = {}
    for package in packages:
        try:
            version = tuple(int(part) for part in package["version"].split("."))
        except (KeyError, ValueError):
            continue
        name = re.sub(r"[-_.]+", "-", package["name"].lower())
        versions[name] = max(versions.get(name, ()), version)
    pinned_requirements = []
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?", requirement)
        name = re.sub(r"[-_.]+", "-", match.group(1).lower()) if match else ""
        if match and name in versions:
            extras = match.group(2) or ""
            pinned_requirements.append(f"{match.group(1)}{extras}=={'.'.join(map(str, versions[name]))}")
        else:
            pinned_requirements.append(requirement)
    return pinned_requirements


def outcomes(junit: Path) -> dict[str, str]:
    result: dict[str, str] = {}
    if not junit.exists():
        return result
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        result[test_id] = kinds[0] if kinds else "passed"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(FRAMEWORKS))
    parser.add_argument("--workdir", type=Path, default=CACHE / "audit_middleware-framework-suites")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    work: Path = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.only.split(",") if n]
    report: dict[str, dict[str, object]] = {}
    differ = False
    for name in names:
        env_dir = work / f"venv-{name}"  # one each: the suites' own test dependencies conflict
        python = env_dir / "bin" / "python"
        if not python.exists():
            venv.create(env_dir, with_pip=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        version_pin = pinned(name)
        run([*pip, "-e", str(ROOT), f"{name}=={version_pin}" if version_pin else name])
        version = subprocess.check_output(
            [str(python), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"], text=True
        ).strip()
        source = work / f"{name}-{version}"
        if not source.exists():
            download = ["download", "-q", "--no-binary", ":all:", "--no-deps", "-d", str(work), f"{name}=={version}"]
            if run([str(python), "-m", "pip", *download]).returncode:
                raise SystemExit(f"cannot download the {name} {version} sdist")
            with tarfile.open(next(work.glob(f"{name}-{version}.tar.gz"))) as tar:
                tar.extractall(work, filter="data")
        pyproject = tomllib.loads((source / "pyproject.toml").read_text())
        requirements = locked(source, [r for g in GROUPS[name] for r in group(pyproject, g)])
        if run([*pip, *requirements]).returncode:  # one unavailable package must not cost all the others
            for requirement in requirements:
                run([*pip, requirement])
        run([*pip, "-e", str(ROOT), f"{name}=={version}"])  # the suites' groups must not move our pins
        results = {}
        for mode in ("plain", "audited"):
            junit = work / f"{name}-{mode}.xml"
            plugin = ["-p", "audit_inject"] if mode == "audited" else []
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
            run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
                 f"--junitxml={junit}", *plugin, *args.pytest_args, "tests"], cwd=source, env=env)  # fmt: skip
            results[mode] = outcomes(junit)
        plain, audited = results["plain"], results["audited"]
        changed = {t: (plain.get(t, "missing"), audited.get(t, "missing"))
                   for t in sorted(set(plain) | set(audited)) if plain.get(t) != audited.get(t)}  # fmt: skip
        count = {mode: {k: list(r.values()).count(k) for k in ("passed", "failure", "error", "skipped")}
                 for mode, r in results.items()}  # fmt: skip
        report[name] = {"version": version, "tests": len(plain), "outcomes": count, "differences": changed}
        differ = differ or bool(changed)
    print(json.dumps(report, indent=2))
    (work / "report.json").write_text(json.dumps(report, indent=2))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
