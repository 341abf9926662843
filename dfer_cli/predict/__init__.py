"""The predict pipeline: input files -> front end -> classifier -> timeline join, composed in pipeline.py."""
