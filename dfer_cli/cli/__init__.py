"""The `dfer` command line (app.py), one module per command group; it calls only the public API."""
