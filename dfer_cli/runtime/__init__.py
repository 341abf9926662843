"""Where and how work runs: device and precision, batched inference, worker pool, torchrun ranks."""
