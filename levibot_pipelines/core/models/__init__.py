"""The models: Transformer (+ its trainer), LightGBM, calibration, ensemble, one inference path.
May import only core and the pure numeric libraries (torch, lightgbm, sklearn); no MLflow/files."""
