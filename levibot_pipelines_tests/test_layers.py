"""The layering rules: ``defs | cli | api -> usecases -> adapters -> core``, nothing imports upward.

Two kinds of test. One imports every module of a layer in a fresh interpreter and asserts that the
forbidden libraries were not loaded (what actually happens at run time). The others parse every
module under ``levibot_pipelines`` with ``ast`` (static and fast; imports inside functions count)
and assert the direction of each import. Offenders are named as ``file:line``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "levibot_pipelines"
ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / PACKAGE

FORBIDDEN_IN_CORE = ("dagster", "ccxt", "duckdb", "mlflow")

# core is pure: the standard library minus files, processes, network and environment, plus the
# numerical libraries named in ARCHITECTURE.md section 2 (scipy for the synthetic market's filter).
CORE_THIRD_PARTY = frozenset({"numpy", "polars", "torch", "lightgbm", "sklearn", "scipy"})
CORE_FORBIDDEN_STDLIB = frozenset(
    {
        "os",
        "pathlib",
        "shutil",
        "tempfile",
        "glob",
        "fcntl",
        "subprocess",
        "socket",
        "urllib",
        "http",
        "sqlite3",
        "pickle",
    }
)

# The top layer: Dagster wiring, the code location, the CLI and the HTTP service (with its schema).
TOP_LAYER = (
    "defs",
    "definitions",
    "cli",
    "api",
    "api_metrics",
    "api_responses",
    "api_schema",
    "celery_app",
)

# Module size limits (lines); a module docstring line starting with "Size:" says why it is longer.
SIZE_LIMITS = {"core": 300, "defs": 200}


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to an absolute dotted module name."""

    source: str  # importing module, e.g. "levibot_pipelines.adapters.prom"
    target: str  # imported module, e.g. "levibot_pipelines.settings" or "dagster"
    where: str  # "levibot_pipelines/adapters/prom.py:21"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_files() -> list[Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


KNOWN_MODULES = frozenset(_module_name(p) for p in _module_files())


def _resolve_from(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports_of(path: Path) -> Iterator[Import]:
    """Every import in the file, at any depth (functions, methods, ``if TYPE_CHECKING``)."""
    module = _module_name(path)
    rel = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(), filename=rel)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, f"{rel}:{node.lineno}")
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, node, path.name == "__init__.py")
            if base == "__future__":
                continue
            for alias in node.names:
                # `from levibot_pipelines import settings` imports the submodule itself.
                sub = f"{base}.{alias.name}"
                yield Import(module, sub if sub in KNOWN_MODULES else base, f"{rel}:{node.lineno}")


ALL_IMPORTS: list[Import] = [imp for path in _module_files() for imp in _imports_of(path)]


def _layer(module: str) -> str:
    """core | adapters | usecases | settings | top | root | external."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return "external"
    if len(parts) == 1:
        return "root"
    if parts[1] in TOP_LAYER:
        return "top"
    return parts[1]


def _top_level(module: str) -> str:
    return module.split(".")[0]


def _offenders(broken: Callable[[Import], bool]) -> list[str]:
    return sorted({f"{imp.where} imports {imp.target}" for imp in ALL_IMPORTS if broken(imp)})


def _assert_none(rule: str, offenders: list[str]) -> None:
    assert not offenders, f"{rule}; offenders:\n  " + "\n  ".join(offenders)


def _is_dagster(target: str) -> bool:
    top = _top_level(target)
    return top == "dagster" or top.startswith("dagster_")


# --- run time: what importing a layer loads -------------------------------------------------


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("levibot_pipelines.core", FORBIDDEN_IN_CORE),
        ("levibot_pipelines.adapters", ("dagster",)),
        ("levibot_pipelines.usecases", ("dagster",)),
    ],
)
def test_importing_a_layer_loads_no_forbidden_library(package, forbidden):
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for m in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print(sorted(n for n in {forbidden!r} if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"importing {package} failed:\n{out.stderr[-2000:]}"
    assert out.stdout.strip() == "[]", f"{package} imports {out.stdout.strip()}"


def test_the_walk_finds_the_subpackages():
    """The layer walk above is recursive: core's subject folders are part of it."""
    names = {m for m in KNOWN_MODULES if _layer(m) == "core"}
    for sub in ("data", "models", "evaluation", "trading"):
        assert f"{PACKAGE}.core.{sub}" in names
        assert any(n.startswith(f"{PACKAGE}.core.{sub}.") for n in names), sub


# --- static: the direction of every import --------------------------------------------------


def test_core_imports_only_core_and_pure_libraries():
    def broken(imp: Import) -> bool:
        if _layer(imp.source) != "core":
            return False
        if _layer(imp.target) != "external":
            return _layer(imp.target) != "core"
        top = _top_level(imp.target)
        if top in sys.stdlib_module_names:
            return top in CORE_FORBIDDEN_STDLIB
        return top not in CORE_THIRD_PARTY

    _assert_none(
        "core imports only core, the standard library without files/processes/network/environment, "
        f"and {sorted(CORE_THIRD_PARTY)}",
        _offenders(broken),
    )


def test_adapters_import_only_adapters_and_core():
    _assert_none(
        "adapters import only adapters and core",
        _offenders(
            lambda imp: (
                _layer(imp.source) == "adapters"
                and _layer(imp.target) not in ("external", "adapters", "core")
            )
        ),
    )


def test_no_adapter_takes_the_whole_settings():
    _assert_none(
        "adapters never import levibot_pipelines.settings (give them the few values they need)",
        _offenders(
            lambda imp: _layer(imp.source) == "adapters" and _layer(imp.target) == "settings"
        ),
    )


def test_adapters_import_no_dagster():
    _assert_none(
        "adapters import no dagster",
        _offenders(lambda imp: _layer(imp.source) == "adapters" and _is_dagster(imp.target)),
    )


def test_usecases_import_only_usecases_adapters_core_and_settings():
    _assert_none(
        "usecases import only usecases, adapters, core and settings",
        _offenders(
            lambda imp: (
                _layer(imp.source) == "usecases"
                and _layer(imp.target)
                not in ("external", "usecases", "adapters", "core", "settings")
            )
        ),
    )


def test_usecases_are_plain_functions_without_dagster():
    _assert_none(
        "usecases import no dagster (the CLI, the API and an asset call the same function)",
        _offenders(lambda imp: _layer(imp.source) == "usecases" and _is_dagster(imp.target)),
    )


def test_settings_imports_only_timeframes():
    allowed = f"{PACKAGE}.core.data.timeframes"
    _assert_none(
        f"settings imports nothing of {PACKAGE} but {allowed}",
        _offenders(
            lambda imp: (
                _layer(imp.source) == "settings"
                and _layer(imp.target) != "external"
                and imp.target != allowed
            )
        ),
    )


def test_nothing_imports_the_top_layer_from_below():
    _assert_none(
        "only the top layer (defs, definitions, cli, api*) imports it",
        _offenders(lambda imp: _layer(imp.target) == "top" and _layer(imp.source) != "top"),
    )


def test_core_imports_no_forbidden_library_anywhere():
    """The run-time test sees only module-level imports; this one sees those inside functions."""
    _assert_none(
        f"core imports none of {FORBIDDEN_IN_CORE}",
        _offenders(
            lambda imp: (
                _layer(imp.source) == "core"
                and (_top_level(imp.target) in FORBIDDEN_IN_CORE or _is_dagster(imp.target))
            )
        ),
    )


def test_package_inits_hold_no_imports():
    """``__init__`` files are docstrings only (Dagster's ``load_from_defs_folder`` walks defs/)."""
    offenders = []
    for path in _module_files():
        if path.name != "__init__.py":
            continue
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                offenders.append(f"{rel}:{node.lineno}")
    _assert_none("__init__.py files hold no imports", offenders)


def test_layer_packages_say_what_lives_there():
    offenders = []
    for pkg in sorted(p for p in PACKAGE_DIR.rglob("__init__.py") if p.parent != PACKAGE_DIR):
        doc = ast.get_docstring(ast.parse(pkg.read_text())) or ""
        if not doc.strip() or doc.strip() == "TODO.":
            offenders.append(pkg.relative_to(ROOT).as_posix())
    _assert_none("every package's __init__.py has a docstring", offenders)


# --- module size ----------------------------------------------------------------------------


def _size_excused(path: Path) -> bool:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return any(line.strip().startswith("Size:") for line in doc.splitlines())


@pytest.mark.parametrize("layer", sorted(SIZE_LIMITS))
def test_modules_stay_small(layer):
    limit = SIZE_LIMITS[layer]
    offenders = []
    for path in sorted((PACKAGE_DIR / layer).rglob("*.py")):
        n_lines = len(path.read_text().splitlines())
        if n_lines > limit and not _size_excused(path):
            offenders.append(f"{path.relative_to(ROOT).as_posix()}: {n_lines} lines")
    _assert_none(
        f"{layer} modules are at most {limit} lines unless a docstring line 'Size: ...' says why",
        offenders,
    )
