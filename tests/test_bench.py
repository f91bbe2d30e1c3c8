"""The benchmarks run and report every figure (their timings are not asserted); the model-size
counts are exact."""

from __future__ import annotations

import json

import pytest

from audiogan import bench
from audiogan.config import PRESETS_DIR, PrepareConfig

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
    assert rows["naive librosa.load, 1 process"]["clips"] == 20  # every file, as end to end
    assert rows["audiogan stages, 1 process"]["clips"] == 6
    assert rows["audiogan prepare on Ray, 1 CPU"]["clips"] == 20
    assert all(row["clips_per_second"] > 0 and row["x_naive_per_core"] > 0 for row in rows.values())
    assert set(result["stages"]) == set(bench.STAGES)
    assert all(stage["ms_per_clip"] > 0 for stage in result["stages"].values())
    table = "\n".join(bench.format_prepare_table(result))
    assert "| naive librosa.load, 1 process | 20 |" in table
    ray_row = rows["audiogan prepare on Ray, 1 CPU"]
    assert len(ray_row["seconds_all_runs"]) == 1
    assert ray_row["wall_seconds"] > ray_row["seconds"] and ray_row["x_naive_wall"] > 0
    # 16-bit clips: 2 bytes a sample and a little Parquet framing, half of float32's 4
    assert 2 * 64000 <= ray_row["bytes_per_clip"] < 2.1 * 64000
    limits = result["limits"]
    assert limits["compute_clips_per_second_per_core"] > 0
    assert limits["memory_gb_per_second"] > 0 and limits["bytes_moved_per_clip"] > 128000
    assert "limits per core" in table
    startup = result["ray_startup"]
    assert startup["cpus"] == 1 and startup["init_s"] > 0 and startup["shutdown_s"] > 0
    assert "Ray alone, 1 CPU(s)" in table


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


def test_bench_model_scales_flops_from_batch_2_exactly_and_counts_all_reduced_gradients():
    """The FLOPs counted at batch 2 and scaled equal those counted at the full batch, and the
    all-reduced bytes are D's fp32 gradients n_critic times plus G's once."""
    import torch

    from audiogan.config import PRESETS_DIR, TrainConfig, load_config
    from audiogan.models import build
    from audiogan.step import gan_step, make_gan

    overrides = {"model_dim": 4, "batch_size": 6, "n_critic": 3}
    result = bench.bench_model(str(PRESETS_DIR / "wavegan.yaml"), overrides, clip_seconds=0.5)
    cfg = load_config(TrainConfig, str(PRESETS_DIR / "wavegan.yaml"), overrides)
    generator, discriminator = build(cfg, 8000)
    gan = make_gan(generator, discriminator, cfg)
    real = [torch.rand(6, 1, 8000) for _ in range(3)]
    assert result["flops_per_step"] == bench.count_flops(lambda: gan_step(gan, real, [None] * 3))
    g = sum(p.numel() for p in generator.parameters())
    d = sum(p.numel() for p in discriminator.parameters())
    assert (result["g_params"], result["d_params"]) == (g, d)
    assert result["allreduce_bytes_per_step"] == 4 * (g + 3 * d)
    assert result["ring_bytes_per_worker"][4] == 2 * 3 * 4 * (g + 3 * d) // 4
    assert (result["clip_samples"], result["clips_per_step"]) == (8000, 18)


def test_bench_model_command_prints_the_table_and_json(capsys):
    from audiogan.cli import main

    assert main(["bench", "model", "model_dim=4", "--clip-seconds", "1", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model size: wavegan (wavegan.yaml), 16000-sample clips")
    assert json.loads(out[-1])["batch_size"] == 64


def test_bench_step_times_a_ddp_step_on_the_cpu_and_prints_the_table(capsys):
    """The same code times the GPU step (NCCL, bf16 and fp32); here gloo, and fp32 on the CPU
    with bf16 before it where the CPU computes in bf16."""
    from audiogan.cli import main
    from audiogan.step import cpu_has_bf16

    argv = ["bench", "step", "--device", "cpu", "--clip-seconds", "0.25", "--steps", "2",
            "--window", "1", "model_dim=4", "batch_size=2", "n_critic=2", "--json"]  # fmt: skip
    import torch

    torch.backends.cudnn.benchmark = True  # a flag of this process: the bench leaves it so
    try:
        assert main(argv) == 0
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = False
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("one worker's training step on cpu (gloo DDP, one process)")
    result = json.loads(out[-1])
    precisions = ["bf16", "fp32"] if cpu_has_bf16() else ["fp32"]
    assert [row["precision"] for row in result["rows"]] == precisions
    row = result["rows"][-1]
    assert row["samples_per_s"] > 0 and len(row["window_rates"]) == 2
    assert row["seconds_per_step"] == pytest.approx(4 / row["samples_per_s"], rel=0.01)
    assert row["tflops"] * 1e12 == pytest.approx(
        result["flops_per_step"] / row["seconds_per_step"], rel=0.02, abs=1e10
    )


def test_bench_model_counts_lazy_r1_in_one_step_of_r1_every():
    """With R1 on one D update in four, a step costs a quarter of a step with it plus three
    quarters of one without."""
    path = str(PRESETS_DIR / "hinge_r1.yaml")
    small = {"model_dim": 4, "batch_size": 2}

    def flops(**keys):
        return bench.bench_model(path, small | keys, clip_seconds=0.25)["flops_per_step"]

    every_step, never, lazy = flops(r1_every=1), flops(r1_weight=0.0), flops(r1_every=4)
    assert never < lazy < every_step
    assert lazy == pytest.approx(every_step / 4 + 3 * never / 4, rel=1e-6)


def test_bench_step_profiles_the_costliest_operators_of_a_step(capsys):
    """--profile N: torch.profiler's N costliest operators of the default recipe's step, by own
    time, each per step and as a share; on the CPU beside one thread's matrix-product peak."""
    from audiogan.cli import main

    argv = ["bench", "step", "--device", "cpu", "--config", "ddsp_stft_cond", "--clip-seconds",
            "0.25", "--steps", "2", "--window", "2", "--profile", "5", "model_dim=4",
            "disc_channels=2", "batch_size=2", "r1_every=2", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    result = json.loads(out[-1])
    profiled = result["profile"]
    assert profiled["steps"] == 2 and profiled["clock"] == "CPU" and len(profiled["top"]) == 5
    shares = [op["percent"] for op in profiled["top"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.0
    assert all(op["operator"] and op["calls_per_step"] > 0 for op in profiled["top"])
    assert result["threads"] == 1 and result["matmul_peak_gflops"] > 0
    assert result["rows"][0]["percent_of_peak"] > 0
    text = "\n".join(out)
    assert "| operator | ms a step | share | calls a step |" in text
    assert f"| {profiled['top'][0]['operator']} |" in text


def test_timing_windows_hold_whole_r1_periods():
    """A window of a lazy-R1 recipe holds R1's share of the cost: its length is a multiple of
    the G steps from one R1 update to the next, or the median window would leave R1 out."""
    from audiogan.config import TrainConfig, load_config

    def cfg(preset, **keys):
        return load_config(TrainConfig, str(PRESETS_DIR / preset), keys)

    assert bench.r1_period(cfg("ddsp_stft_cond.yaml")) == 16  # R1 every 16th D update
    assert bench.r1_period(cfg("hinge_r1.yaml", r1_every=4, n_critic=2)) == 2  # 2 D a G step
    assert bench.r1_period(cfg("hinge_r1.yaml", r1_weight=0.0)) == 1
    assert bench.r1_period(cfg("wavegan_gp.yaml")) == 1  # its penalty is on every update
    said = []
    assert bench.whole_windows(cfg("ddsp_stft_cond.yaml"), 5, 20, said.append) == (16, 32)
    assert said == [
        "bench: windows of 16 steps, not 5: R1 runs on one step in 16",
        "bench: 32 steps, not 20: whole windows of 16",
    ]
    said.clear()
    assert bench.whole_windows(cfg("ddsp_stft_cond.yaml"), 32, 64, said.append) == (32, 64)
    assert said == []


def test_the_plain_loop_times_a_conditional_recipe_in_its_precision():
    """The default recipe (class-conditional, bf16 where the CPU has it) in the plain loop:
    labels for its batches, and a rate and FLOP count for every window."""
    from audiogan.config import TrainConfig, load_config

    cfg = load_config(
        TrainConfig, str(PRESETS_DIR / "ddsp_stft_cond.yaml"),
        {"model_dim": 4, "disc_channels": 2, "batch_size": 2, "r1_every": 2},
    )  # fmt: skip
    plain = bench.plain_training_rate(cfg, 4000, steps=4, window=2)
    assert len(plain["window_rates"]) == 2 and plain["samples_per_s"] > 0
    assert plain["flops_per_step"] > 0
