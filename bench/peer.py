"""The peer of the online bench: the prediction service a team would write by hand, served beside `migrate serve`.

FastAPI with a plain ``def`` endpoint (FastAPI runs it on its thread pool), redis-py reading each entity's
hash with HMGET (pipelined for several entities), scikit-learn's ``predict_proba`` on the same model file, one
uvicorn worker, OMP_NUM_THREADS=1. Nothing of `migrate` is imported here: it is what the toolkit is measured
against (issue 14).

It reads, in the same Redis, one hash per entity in the layout a team would write by hand (a field per model
feature, ``v:<name>``), which the bench fills with the values `migrate` scores for the same entities at the
serving moment: the batch features and the real-time windows, ready-made, as if a stream job of the team's kept
each window's current value in its field. `migrate` instead keeps window states and evaluates each window as of
the request's time, so the peer does less work per entity than `migrate` does: the comparison is tilted in the
peer's favour.

Configured by environment: PEER_REDIS_URL, PEER_MODEL (a skops file), PEER_KEY_PREFIX (``peer:<usecase>:``),
PEER_KEYS and PEER_FIELDS (comma-separated).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import redis
import skops.io as sio
from fastapi import FastAPI
from pydantic import BaseModel

REDIS = redis.Redis.from_url(os.environ["PEER_REDIS_URL"], socket_timeout=1.0, socket_connect_timeout=1.0)
MODEL_PATH = os.environ["PEER_MODEL"]
MODEL = sio.load(MODEL_PATH, trusted=sio.get_untrusted_types(file=MODEL_PATH))
PREFIX = os.environ["PEER_KEY_PREFIX"]
KEYS = os.environ["PEER_KEYS"].split(",")
FIELDS = os.environ["PEER_FIELDS"].split(",")

app = FastAPI()


class PredictBody(BaseModel):
    entities: list[dict[str, int]]


def _value(raw: bytes | str | None) -> float:
    return float(raw) if raw else float("nan")


@app.post("/predict")
def predict(body: PredictBody) -> dict[str, Any]:
    keys = [PREFIX + ":".join(str(entity[k]) for k in KEYS) for entity in body.entities]
    if len(keys) == 1:
        rows = [REDIS.hmget(keys[0], FIELDS)]
    else:
        pipe = REDIS.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, FIELDS)
        rows = pipe.execute()
    features = np.array([[_value(v) for v in row] for row in rows], dtype=np.float64)
    scores = MODEL.predict_proba(features)[:, 1]
    return {
        "predictions": [
            {"key": entity, "prediction": float(score)} for entity, score in zip(body.entities, scores, strict=True)
        ]
    }
