"""docs/features.md's YAML examples validate against the use-case schema, so the page cannot drift from it.

Every ```yaml block of the page is marked on its first line: ``# full use case`` (validated as it stands) or
``# fragment of usecases/item_availability.yaml`` (merged into that file's content, mappings recursively and
anything else replaced, then validated). An unmarked block fails: nothing on the page escapes the check.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrate.usecase import UseCase

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "features.md"
BASE = ROOT / "usecases" / "item_availability.yaml"
FULL = "# full use case"
FRAGMENT = "# fragment of usecases/item_availability.yaml"

_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.M | re.S)


def _blocks() -> list[str]:
    return _BLOCK.findall(DOC.read_text())


def _merged(base: Any, fragment: Any) -> Any:
    """`fragment` laid over `base`: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(fragment, dict):
        return {**base, **{key: _merged(base.get(key), value) for key, value in fragment.items()}}
    return fragment


def _usecase(block: str) -> UseCase:
    data = yaml.safe_load(block)
    if block.startswith(FRAGMENT):
        data = _merged(yaml.safe_load(BASE.read_text()), data)
    return UseCase.model_validate(data)


def test_the_page_has_full_use_cases_and_fragments_and_nothing_unmarked() -> None:
    blocks = _blocks()
    unmarked = [block.splitlines()[0] for block in blocks if not block.startswith((FULL, FRAGMENT))]
    assert not unmarked, f"docs/features.md has yaml blocks marked neither {FULL!r} nor {FRAGMENT!r}: {unmarked}"
    assert any(block.startswith(FULL) for block in blocks)
    assert any(block.startswith(FRAGMENT) for block in blocks)


@pytest.mark.parametrize("block", _blocks(), ids=lambda block: f"{block.splitlines()[0]}:{block.splitlines()[1]}")
def test_each_yaml_block_validates(block: str) -> None:
    _usecase(block)


def test_the_fragments_add_what_they_declare() -> None:
    """The merge is not vacuous: each fragment's top-level sections reach the validated use case."""
    base = UseCase.model_validate(yaml.safe_load(BASE.read_text()))
    for block in (b for b in _blocks() if b.startswith(FRAGMENT)):
        usecase = _usecase(block)
        for section in yaml.safe_load(block):
            assert getattr(usecase, section) != getattr(base, section), section


def test_the_full_example_declares_what_the_page_describes() -> None:
    """The full example carries a group keyed by a context value, a spine and a label from a later event."""
    (usecase,) = (_usecase(b) for b in _blocks() if b.startswith(FULL))
    assert usecase.realtime_features is not None and usecase.realtime_features.groups
    carried = {c.name for c in usecase.context} - set(usecase.entity.key_names)
    assert any(set(group.key) & carried for group in usecase.realtime_features.groups)
    assert usecase.training.spine is not None and usecase.label.from_event is not None
