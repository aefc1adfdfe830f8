"""Damage a Parquet file the way a disk or another tool can: a page header overwritten inside the file."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def damage_page(path: Path, column: str) -> None:
    """Overwrite the header of `column`'s first page (its dictionary page when it has one) in every row group: the
    footer stays whole, so the file opens and DuckDB fails only when it decodes that column, with a bare
    ``duckdb.Error`` ("don't know what type") that names no file."""
    metadata = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for group in range(metadata.num_row_groups):
        for index in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(index)
            if chunk.path_in_schema == column:
                first = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
                data[first : first + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
