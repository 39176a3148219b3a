"""Thin Dagster wiring loaded by load_from_defs_folder: each asset calls a use case; checks observe.
May import anything below (usecases, adapters, core, settings); nothing below imports defs."""
