"""Issue #29's GPU sequence, the parts that hold without a GPU: the mamf-style grid, and predictions scored
against a measurement by hand."""

from types import SimpleNamespace

from experiments.mamf_sweep import shapes
from experiments.score_predictions import score


def test_the_mamf_grid_has_hundreds_of_shapes_8192_cubed_among_them_and_a_seeded_order():
    g = shapes("bf16")
    assert len(g) == 16 * 4 * 4 * 2 and (8192, 8192, 8192, "nn") in g and g == shapes("bf16")
    assert len({(m, n, k) for m, n, k, _ in g[:40]}) == 40 and g[:4] != sorted(g)[:4]   # a spread, not a corner
    assert {lay for *_, lay in shapes("fp8")} == {"nt", "nt-fast"}


def _scenario(batch, tpot, tps, ttft):
    stat = lambda v: SimpleNamespace(median=v)   # noqa: E731
    return SimpleNamespace(batch=batch, prompt_len=256, gen_len=256,
                           summary={"tpot_s": stat(tpot), "tps": stat(tps), "ttft_s": stat(ttft)})


def _pred(batch, tpot, tps, ttft, width=1.2):
    return {"batch": batch, "prompt_len": 256, "gen_len": 256, "tpot_s": tpot, "tps": tps, "ttft_s": ttft,
            "interval": {k: [v / width, v * width] for k, v in (("tpot_s", tpot), ("tps", tps), ("ttft_s", ttft))},
            "predictable": {"tpot_s": True, "tps": True, "ttft_s": True}}


def test_predictions_scored_by_hand():
    record = SimpleNamespace(scenarios=[_scenario(2, 0.010, 200.0, 0.05), _scenario(4, 0.012, 330.0, 0.06)])
    # b2: TPOT +5%, TPS -5%; b4: TPOT +25% (outside x1.2), TPS -10%; b16 was not measured: not scored
    preds = [_pred(2, 0.0105, 190.0, 0.05), _pred(4, 0.015, 297.0, 0.06), _pred(16, 0.02, 800.0, 0.1)]
    rows, verdict = score(preds, record)
    assert len(rows) == 6
    assert abs(verdict["metrics"]["tpot_s"]["median_abs_error"] - 0.15) < 1e-9
    assert abs(verdict["metrics"]["tps"]["median_abs_error"] - 0.075) < 1e-9
    assert verdict["inside_fraction"] == 0.75 and verdict["pass"] is False     # TPOT's median error is over 10%
    _, ok = score(preds[:1], record)
    assert ok["pass"] is True and ok["inside_fraction"] == 1.0
