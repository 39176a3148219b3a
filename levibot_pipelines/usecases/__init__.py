"""One module per thing the system does: plain functions over adapters + core, small result records.
May import usecases, adapters, core and settings; never dagster, defs, cli or api."""
