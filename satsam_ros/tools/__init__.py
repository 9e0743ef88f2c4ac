"""Tools beside the runtime: the `satsam` command, the demo, bag evaluation, the benchmark."""
