"""A synthetic offline store of N entities for the batch benchmark (generation is not timed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np

AS_OF = datetime(2026, 11, 14, 2, tzinfo=UTC)


def build(path: Path, entities: int, seed: int = 7) -> None:
    """`entities` store × product pairs, each with one batch-feature row as of AS_OF − 2h."""
    path.unlink(missing_ok=True)
    stores = 1_000
    products = -(-entities // stores)
    with duckdb.connect(str(path)) as con:
        con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
        con.execute(f"""
            CREATE TABLE store_products AS
            SELECT s AS store_id, 1000000 + p AS product_id, TIMESTAMP '2026-01-01' AS listed_at
            FROM range({stores}) t(s), range({products}) u(p)
            LIMIT {entities}
        """)
        con.execute("""
            CREATE TABLE item_features_daily AS
            SELECT store_id, product_id, TIMESTAMP '2026-11-14 00:00:00' AS as_of,
                   random() AS found_rate_1d, floor(random() * 20) AS scans_1d,
                   random() AS found_rate_7d, floor(random() * 120) AS scans_7d,
                   random() AS store_found_rate_7d, random() AS product_found_rate_7d,
                   random() AS popularity, floor(random() * 300) AS product_age_days
            FROM store_products
        """)


def training_set(n: int = 50_000, features: int = 8, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A small labelled sample in the same feature space, to fit the model the benchmark scores with."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, features))
    logits = 3 * (x[:, 2] - 0.5) + 2 * (x[:, 4] - 0.5) + rng.normal(0, 0.5, n)
    return x, (logits > 0).astype(np.int64)
