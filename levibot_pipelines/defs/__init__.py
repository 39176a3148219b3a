"""Thin Dagster wiring, loaded by ``load_from_defs_folder``: each module exposes one
``@dg.definitions`` function built from ``Settings`` at load time (never at import time)."""
