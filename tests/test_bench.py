"""The prepare benchmark runs and reports every figure (its timings are not asserted)."""

from __future__ import annotations

import pytest

from audiogan import bench
from audiogan.config import PrepareConfig

pytestmark = pytest.mark.ray


def test_bench_prepare_reports_rows_stages_and_ratios(synth_root):
    result = bench.bench_prepare(
        str(synth_root),
        PrepareConfig(),
        sample_files=6,
        cpu_counts=(1,),
        repeats=1,
        log=lambda _: None,
    )
    rows = {row["pipeline"]: row for row in result["rows"]}
    assert set(rows) == {
        "naive librosa.load, 1 process",
        "audiogan stages, 1 process",
        "audiogan prepare on Ray, 1 CPU",
    }
    assert rows["naive librosa.load, 1 process"]["clips"] == 6
    assert rows["audiogan stages, 1 process"]["clips"] == 6
    assert rows["audiogan prepare on Ray, 1 CPU"]["clips"] == 20
    assert all(row["clips_per_second"] > 0 and row["x_naive_per_core"] > 0 for row in rows.values())
    assert set(result["stages"]) == set(bench.STAGES)
    assert all(stage["ms_per_clip"] > 0 for stage in result["stages"].values())
    table = "\n".join(bench.format_prepare_table(result))
    assert "| naive librosa.load, 1 process | 6 |" in table
    assert len(rows["audiogan prepare on Ray, 1 CPU"]["seconds_all_runs"]) == 1


def test_flops_are_counted_through_a_gradient_penalty():
    import torch

    a, b = torch.rand(8, 16), torch.rand(16, 4)
    assert bench.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4

    x = torch.rand(3, 5, requires_grad=True)
    w = torch.rand(5, 2)

    def penalty():  # a double backward, as WGAN-GP's, must not break the counter
        (grad,) = torch.autograd.grad(((x @ w) ** 2).sum(), x, create_graph=True)
        grad.sum().backward()

    assert bench.count_flops(penalty) > 2 * 3 * 5 * 2
