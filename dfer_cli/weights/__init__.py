"""Model weights: dfer's format, official checkpoints, the installed entries, downloads and where they are published."""
