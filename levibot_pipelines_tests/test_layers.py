"""The layering rule: core is pure, adapters know no Dagster."""

import subprocess
import sys

import pytest

FORBIDDEN_IN_CORE = ("dagster", "ccxt", "duckdb", "mlflow")


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("levibot_pipelines.core", FORBIDDEN_IN_CORE),
        ("levibot_pipelines.adapters", ("dagster",)),
    ],
)
def test_importing_a_layer_loads_no_forbidden_library(package, forbidden):
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for m in pkgutil.iter_modules(pkg.__path__):\n"
        "    importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        f"print(sorted(n for n in {forbidden!r} if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{package} imports {out.stdout.strip()}"
