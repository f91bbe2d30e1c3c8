"""gan_step on tensors: both networks change, losses are finite, D is frozen for G's update."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch

from audiogan import losses, step
from audiogan.config import PRESETS_DIR, RECIPES, ConfigError, TrainConfig, load_config
from audiogan.models import build


def tiny_gan(model: str, **overrides) -> step.GAN:
    settings = {
        "loss": "bce" if model == "dcgan" else "wgan-gp",
        "n_critic": 1 if model == "dcgan" else 2,
        "model_dim": 4,
        "latent_dim": 16,
        "batch_size": 4,
    }
    cfg = TrainConfig(model=model, **(settings | overrides))
    torch.manual_seed(0)
    generator, discriminator = build(cfg, 4096, num_classes=2)
    return step.make_gan(generator, discriminator, cfg)


def copy_params(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


@pytest.mark.parametrize("model", ["wavegan", "dcgan"])
def test_a_seeded_gan_step_changes_both_networks_and_returns_finite_losses(model):
    gan = tiny_gan(model)
    g_before, d_before = copy_params(gan.generator), copy_params(gan.discriminator)
    real = [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(gan.cfg.n_critic)]
    result = step.gan_step(gan, real, [None] * gan.cfg.n_critic)
    assert set(result) == {"d_loss", "g_loss", "gp"}
    assert all(math.isfinite(v) for v in result.values())
    assert changed(g_before, gan.generator) and changed(d_before, gan.discriminator)
    if model == "wavegan":
        assert result["gp"] > 0


def test_gan_step_is_reproducible_from_a_seed():
    results = []
    for _ in range(2):
        gan = tiny_gan("wavegan")
        torch.manual_seed(1)
        real = [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(2)]
        results.append(step.gan_step(gan, real, [None, None]))
    assert results[0] == results[1]


@pytest.mark.parametrize("model", ["wavegan", "dcgan"])
def test_d_is_frozen_during_the_g_step_and_g_during_the_d_step(model):
    gan = tiny_gan(model)
    d_before, g_before = copy_params(gan.discriminator), copy_params(gan.generator)
    step.g_step(gan, torch.rand(4, 1, 4096) * 2 - 1, None)
    assert not changed(d_before, gan.discriminator)  # the 2019 bug trained D here
    assert all(p.grad is None for p in gan.discriminator.parameters())
    assert all(p.requires_grad for p in gan.discriminator.parameters())
    assert changed(g_before, gan.generator)

    g_before = copy_params(gan.generator)
    step.d_step(gan, torch.rand(4, 1, 4096) * 2 - 1, None)
    assert not changed(g_before, gan.generator)


def test_the_ema_generator_follows_g_slowly_after_a_warm_up():
    gan = tiny_gan("wavegan", ema_decay=0.9)
    real = [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(2)]
    # At G step t the decay is min(ema_decay, (1 + t) / (10 + t)): 2/11 at the first step,
    # 0.9 from step 80 on.
    for steps_before, decay in ((0, 2 / 11), (80, 0.9)):
        gan.g_steps = steps_before
        ema_before = copy_params(gan.ema)
        step.gan_step(gan, real, [None, None])
        for old, ema, new in zip(
            ema_before, gan.ema.parameters(), gan.generator.parameters(), strict=True
        ):
            torch.testing.assert_close(ema, decay * old + (1 - decay) * new.detach())


def test_conditional_step_uses_the_batch_labels():
    gan = tiny_gan("wavegan", conditional=True)
    real = [torch.rand(4, 1, 4096) * 2 - 1 for _ in range(2)]
    labels = [torch.tensor([0, 1, 0, 1])] * 2
    result = step.gan_step(gan, real, labels)
    assert all(math.isfinite(v) for v in result.values())


def test_gan_step_wants_one_batch_per_critic_update():
    gan = tiny_gan("wavegan")
    with pytest.raises(ValueError, match="needs 2 real batches"):
        step.gan_step(gan, [torch.zeros(4, 1, 4096)], [None])


# A recipe's preset, shrunk: the same losses, penalties and families, at a size that steps in
# a fraction of a second.
TINY = {"model_dim": 4, "latent_dim": 8, "disc_channels": 2, "batch_size": 2}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_each_recipe_steps_with_finite_losses_and_trains_both_networks(recipe):
    cfg = load_config(TrainConfig, str(PRESETS_DIR / RECIPES[recipe][0]), TINY)
    torch.manual_seed(0)
    generator, discriminator = build(cfg, 4000, num_classes=3, sample_rate_hz=16000)
    gan = step.make_gan(generator, discriminator, cfg)
    g_before, d_before = copy_params(gan.generator), copy_params(gan.discriminator)
    labels = [torch.tensor([0, 2]) if cfg.conditional else None] * cfg.n_critic
    for _ in range(2):
        real = [torch.rand(2, 1, 4000) * 2 - 1 for _ in range(cfg.n_critic)]
        result = step.gan_step(gan, real, labels)
        assert all(math.isfinite(v) for v in result.values()), result
    assert changed(g_before, gan.generator) and changed(d_before, gan.discriminator)
    assert ("fm" in result) == (cfg.fm_weight > 0)
    if cfg.r1_weight or cfg.loss == "wgan-gp":
        assert result["gp"] > 0  # R1 ran at the first D update; WGAN-GP at every one


def test_lazy_r1_runs_on_every_kth_d_update_weighed_by_k(monkeypatch):
    gan = tiny_gan("wavegan", loss="hinge", r1_weight=2.0, r1_every=3, n_critic=1)
    calls = []

    def fake_r1(critic, real):
        calls.append(gan.g_steps)
        return torch.tensor(0.5, requires_grad=True)

    monkeypatch.setattr(step.losses, "r1_penalty", fake_r1)
    for _ in range(7):
        result = step.gan_step(gan, [torch.rand(4, 1, 4096) * 2 - 1], [None])
        assert result["gp"] == 0.5  # the latest penalty, also on updates without one
    assert calls == [0, 3, 6]  # D updates 0, 3 and 6 of 0..6

    # gamma / 2 * k * R1 = 2 / 2 * 3 * 0.5 = 1.5 more in the D loss of an update that has it.
    real = torch.rand(4, 1, 4096) * 2 - 1
    losses = []
    for regularize in (False, True):
        twin = copy.deepcopy(gan)
        torch.manual_seed(4)  # the same fakes
        losses.append(step.d_step(twin, real, None, regularize=regularize)["d_loss"])
    assert losses[1] - losses[0] == pytest.approx(1.5)


def _ddp_steps(rank: int, world: int, store_path: str, recipe: str, results) -> None:
    """Two gan_steps of a shrunk recipe with G and D under DDP, as a Ray Train worker has
    them (gloo, buffers broadcast at every forward); the G weights it ends with."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    store = dist.FileStore(store_path, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    try:
        cfg = load_config(TrainConfig, str(PRESETS_DIR / RECIPES[recipe][0]), TINY)
        torch.manual_seed(0)
        generator, discriminator = build(cfg, 4000, num_classes=3)
        gan = step.make_gan(DDP(generator), DDP(discriminator), cfg)
        labels = [torch.tensor([0, 2]) if cfg.conditional else None] * cfg.n_critic
        torch.manual_seed(1 + rank)  # each rank its own batches and noise
        for _ in range(2):
            real = [torch.rand(2, 1, 4000) * 2 - 1 for _ in range(cfg.n_critic)]
            result = step.gan_step(gan, real, labels)
            assert all(math.isfinite(v) for v in result.values())
        results[rank] = [p.detach().clone() for p in step.unwrap(gan.generator).parameters()]
    finally:
        dist.destroy_process_group()


# Every family, penalty and loss of the recipes at least once (WaveGAN-GP's 2-worker training
# is tests/test_train.py's; ddsp-stft is ddsp-stft-cond without the labels).
DDP_RECIPES = (
    "dcgan", "hinge-r1", "multiscale", "stft", "ddsp-stft-cond", "ddsp2-stft-cond",
    "hybrid-stft-cond",
)  # fmt: skip


@pytest.mark.parametrize("recipe", DDP_RECIPES)
def test_each_recipe_steps_under_ddp_and_keeps_the_ranks_identical(recipe, tmp_path):
    # Two forwards before one backward (D on real and fake, R1, feature matching) meet DDP's
    # in-place buffer broadcast here: a model that keeps a tensor it uses as a buffer fails.
    context = torch.multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        processes = [
            context.Process(
                target=_ddp_steps, args=(rank, 2, str(tmp_path / "store"), recipe, results)
            )
            for rank in range(2)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
        assert [p.exitcode for p in processes] == [0, 0]
        first, second = results[0], results[1]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_the_gpu_preset_of_the_winning_recipe_steps_at_4_s():
    cfg = load_config(TrainConfig, str(PRESETS_DIR / "ddsp_stft_gpu.yaml"), {"batch_size": 2})
    assert (cfg.model, cfg.discriminator, cfg.model_dim) == ("ddsp", "stft", 64)
    torch.manual_seed(0)
    generator, discriminator = build(cfg, 64000, sample_rate_hz=16000)
    gan = step.make_gan(generator, discriminator, cfg)
    result = step.gan_step(gan, [torch.rand(2, 1, 64000) * 2 - 1], [None])
    assert all(math.isfinite(v) for v in result.values()) and result["gp"] > 0


def _count_forwards(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("share", [False, True])
def test_shared_passes_run_g_once_and_d_twice_a_step(share):
    """share_passes: G makes one batch a step (D's update and G's use it) and feature matching
    takes D's features of the real clips from D's update, so D runs twice (real and fake
    together, then the fakes for G), not three times."""
    gan = tiny_gan("wavegan", loss="hinge", n_critic=1, fm_weight=1.0, share_passes=share)
    g_calls, d_calls = _count_forwards(gan.generator), _count_forwards(gan.discriminator)
    result = step.gan_step(gan, [torch.rand(4, 1, 4096) * 2 - 1], [None])
    assert math.isfinite(result["fm"])
    assert (g_calls[0], d_calls[0]) == ((1, 2) if share else (2, 3))


def test_with_shared_passes_g_learns_from_the_clips_d_was_trained_on():
    """With D held still (learning rate 0), the shared step's G loss and feature-matching
    distance are those of the first latent batch drawn, against D's features of the real clips:
    G's update is judged on the clips of D's update, not on fresh ones."""
    gan = tiny_gan(
        "wavegan", loss="hinge", n_critic=1, fm_weight=1.0, share_passes=True, phase_shuffle=0
    )  # phase shuffle would draw D's shifts from the same random stream
    for group in gan.opt_d.param_groups:
        group["lr"] = 0.0
    real = torch.rand(4, 1, 4096) * 2 - 1
    torch.manual_seed(5)
    z = step.sample_latent(gan.cfg, 4)
    with torch.no_grad():
        fake_logits, fake_features = gan.discriminator(gan.generator(z))
        _, real_features = gan.discriminator(real)
    expected_fm = losses.feature_matching(real_features, fake_features).item()
    torch.manual_seed(5)  # the same latent batch
    result = step.gan_step(gan, [real], [None])
    assert result["g_loss"] == pytest.approx(losses.hinge_g(fake_logits).item(), rel=1e-5)
    assert result["fm"] == pytest.approx(expected_fm, rel=1e-5)


def test_precision_is_bf16_on_a_gpu_and_on_a_cpu_only_where_asked_and_native(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [step.resolved_precision(p, gpu) for p in ("auto", "bf16", "fp32")] == [
        "bf16", "bf16", "fp32"
    ]  # fmt: skip
    monkeypatch.setattr(step, "cpu_has_bf16", lambda: True)
    assert [step.resolved_precision(p, cpu) for p in ("auto", "bf16", "fp32")] == [
        "fp32", "bf16", "fp32"
    ]  # fmt: skip
    # Emulated bf16 is slower than float32: a CPU without it trains in float32.
    monkeypatch.setattr(step, "cpu_has_bf16", lambda: False)
    assert step.resolved_precision("bf16", cpu) == "fp32"
    assert step.autocast_for("bf16", cpu) is contextlib.nullcontext
    with pytest.raises(ConfigError, match="precision must be one of auto, bf16, fp32"):
        TrainConfig(precision="fp16")


@pytest.mark.skipif(not step.cpu_has_bf16(), reason="this CPU has no native bf16")
def test_a_bf16_step_on_the_cpu_runs_d_in_bf16_and_stays_near_the_float32_step():
    """precision=bf16 on a CPU with native bf16: D's convolutions compute in bf16 but for R1's
    pass (float32, as the penalties are), and a seeded step's losses stay within bf16's
    rounding of the float32 step's."""
    cfg = load_config(TrainConfig, str(PRESETS_DIR / "ddsp_stft_cond.yaml"), TINY)
    results, conv_dtypes = {}, []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        generator, discriminator = build(cfg, 4000, num_classes=3, sample_rate_hz=16000)
        gan = step.make_gan(generator, discriminator, cfg)
        convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv1d)]
        if precision == "bf16":
            for layer in convs:
                layer.register_forward_hook(lambda m, i, out: conv_dtypes.append(out.dtype))
        torch.manual_seed(1)
        real = [torch.rand(2, 1, 4000) * 2 - 1]
        autocast = step.autocast_for(precision, torch.device("cpu"))
        results[precision] = step.gan_step(gan, real, [torch.tensor([0, 2])], autocast)
    # The first D update carries R1: D's passes are (real and fake), R1's, and G's fakes.
    assert results["bf16"]["gp"] > 0
    assert conv_dtypes.count(torch.float32) == len(convs)  # R1's pass
    assert conv_dtypes.count(torch.bfloat16) == 2 * len(convs)
    for key, value in results["fp32"].items():
        assert results["bf16"][key] == pytest.approx(value, rel=0.05, abs=0.02), key
