"""Training and the benchmarks: data sets, clip cache, loader, loop, evaluation. Predict never imports it."""
