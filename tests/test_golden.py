"""Refactors keep behaviour: the CLI's output for pinned inputs is byte-identical to tests/golden/."""

import pytest

from tests.golden.cases import CASES, HERE, run


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_unchanged(name):
    assert run(CASES[name]) == (HERE / name).read_text(), \
        f"{name} changed: if intended, `python -m tests.golden.cases --regen` and review the diff"
