"""Pure domain logic by subject (data, models, evaluation, trading), plus metrics and input checks.
May import only core, the standard library and numpy/polars/torch/lightgbm/sklearn/scipy: no I/O."""
