"""Trading rules: policy, backtest, performance, baselines, paper position, kill-switch, drift.
May import only core and the pure numeric libraries; state and files live in adapters."""
