"""dfer past one machine: the predict pipeline as a Ray Data job (the `dfer[ray]` extra)."""
