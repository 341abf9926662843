"""One Parquet row per input file, in one fixed schema: the columns a query filters on, and the whole
record that `dfer predict --json` prints as one JSON column."""

# The record's nested fields (clips, windows, people, flags, the explanation) change shape with the
# options and the weights' classes; kept as JSON they leave the schema fixed across runs and batches, so
# that a batch of error rows alone never infers null types and any reader can load every file of a run.

from __future__ import annotations

import json

import pyarrow as pa

from dfer_cli.results.records import FileResult

# Written into each file's metadata: resume reads only files of this layout.
LAYOUT = "dfer.predict.rows/1"

ROW_SCHEMA = pa.schema([
    ("input", pa.string()),  # which file: its absolute path, or its URI (what resume matches)
    ("path", pa.string()),  # as the record shows it
    ("status", pa.string()),  # ok | no_face | error
    ("error", pa.string()),
    ("label", pa.string()),
    ("confidence", pa.float64()),
    ("speaker", pa.int64()),  # the person who speaks most; null: nobody visible speaks (or --people main)
    ("weights", pa.string()),
    ("precision", pa.string()),  # fp32 | bf16: settled once by the driver for every actor
    ("device", pa.string()),  # where the model ran
    ("decode_node", pa.string()),  # the Ray node that decoded the file
    ("model_node", pa.string()),  # the Ray node whose actor classified it
    ("record", pa.string()),  # the JSON record, as `dfer predict --json` prints it
])


def to_row(result: FileResult, key: str, precision: str, device: str, decode_node: str, model_node: str) -> dict:
    return {"input": key, "path": result.path, "status": result.status, "error": result.error,
            "label": result.label, "confidence": result.confidence, "speaker": result.speaker,
            "weights": result.weights, "precision": precision, "device": device, "decode_node": decode_node,
            "model_node": model_node, "record": json.dumps(result.to_dict(), ensure_ascii=False)}


def table(rows: list[dict], run: dict) -> pa.Table:
    """Rows as a table of the fixed schema; `run` (the options that shaped them) goes in its metadata."""
    schema = ROW_SCHEMA.with_metadata({"dfer.layout": LAYOUT, "dfer.run": json.dumps(run, sort_keys=True)})
    return pa.Table.from_pylist(rows, schema=schema)

# What the model stage hands on: the rows, and for a timeline that went in parts (status "part") the
# classified part, pickled, for the driver to join (`stages.PartJoiner`); null on finished rows.
STAGE_SCHEMA = ROW_SCHEMA.append(pa.field("payload", pa.binary()))
