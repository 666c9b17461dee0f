"""An edit returns before the episode's QA pairs and motion tokens are re-derived: that runs in
the background once the edits pause, ends with the same records as re-deriving at once, and
export (and the app's exit) waits for it."""

from __future__ import annotations

import json

import pytest

from app.sample import build_synthetic
from app.workbench import Workbench


def normal(records) -> list:
    return json.loads(json.dumps(records, sort_keys=True, default=float))


@pytest.fixture
def wb(tmp_path):
    root = tmp_path / "ds"
    build_synthetic(root, seeds=(0,), num_frames=24)
    w = Workbench(root, author="t")
    w.rederive("synthetic_00")  # the records as the annotators would have written them
    return w


def test_edits_defer_the_derived_products_and_flush_writes_the_same_records(wb):
    from annotators.pipeline import derive_products

    eid = "synthetic_00"
    before = normal(wb.ds.read_derived(eid, "qa"))
    wb.derive_delay = 3600.0  # nothing is derived until flushed
    wb.nudge_depth(eid, 5, "right", "wrist", 0.2)
    wb.nudge_depth(eid, 6, "right", "wrist", 0.2)
    assert wb.pending_derived() == [eid]
    assert normal(wb.ds.read_derived(eid, "qa")) == before  # not yet re-derived: the edit did not wait
    assert wb.flush_derived(timeout=120)
    assert wb.pending_derived() == []
    after = {k: normal(wb.ds.read_derived(eid, k)) for k in ("qa", "motion")}
    assert after["qa"] != before  # the moved wrist changed the answers
    expected = {k: normal(v) for k, v in derive_products(wb.episode(eid)).items() if k in after}
    assert after == expected


def test_the_background_derives_once_the_edits_pause(wb):
    import time

    eid = "synthetic_00"
    wb.derive_delay = 0.05
    wb.toggle_visibility(eid, 3, "right", "wrist")
    deadline = time.time() + 120
    while wb.pending_derived() and time.time() < deadline:
        time.sleep(0.05)
    assert wb.pending_derived() == [] and wb.derive_errors == {}
    from annotators.pipeline import derive_products

    assert normal(wb.ds.read_derived(eid, "qa")) == normal(derive_products(wb.episode(eid))["qa"])


def test_export_waits_for_pending_derivations(wb):
    eid = "synthetic_00"
    wb.derive_delay = 3600.0
    wb.nudge_depth(eid, 4, "right", "wrist", -0.1)
    assert wb.pending_derived() == [eid]
    out = wb.export("after_edit")
    assert wb.pending_derived() == []
    assert out.endswith("after_edit")


def test_a_killed_app_rederives_at_its_next_start(wb):
    from annotators.pipeline import derive_products
    from app.workbench import PENDING_DERIVE_FILE

    eid = "synthetic_00"
    wb.derive_delay = 3600.0
    wb.nudge_depth(eid, 7, "right", "wrist", 0.3)
    assert json.loads((wb.root / PENDING_DERIVE_FILE).read_text()) == [eid]
    # the process dies here (no flush); the next start finds the episode and derives it
    again = Workbench(wb.root, author="t")
    assert again.pending_derived() == [eid]
    assert again.flush_derived(timeout=120)
    assert not (wb.root / PENDING_DERIVE_FILE).exists()
    assert normal(again.ds.read_derived(eid, "qa")) == normal(derive_products(again.episode(eid))["qa"])
