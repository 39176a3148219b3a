"""levibot_pipelines: candles -> features -> models -> policy -> published predictions.
Four layers, one direction: defs | cli | api -> usecases -> adapters -> core (see README.md)."""
