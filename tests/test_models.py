"""Model shapes, sizes and the pieces that make each family what it is (no Ray)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from audiogan.config import ConfigError, TrainConfig
from audiogan.models import build, dcgan, ddsp, hybrid, multiscale, parameter_count, stft, wavegan


@pytest.mark.parametrize("clip_samples", [16384, 16000, 64000, 8000, 12345])
@pytest.mark.parametrize("model", ["wavegan", "dcgan"])
def test_both_families_emit_exactly_clip_samples(model, clip_samples):
    cfg = TrainConfig(model=model, model_dim=4, latent_dim=16)
    generator, discriminator = build(cfg, clip_samples)
    fake = generator(torch.rand(3, 16) * 2 - 1)
    assert fake.shape == (3, 1, clip_samples)
    assert fake.abs().max() <= 1  # tanh on data in [-1, 1]
    logits, features = discriminator(fake)
    assert logits.shape == (3,) and len(features) >= 3


def test_wavegan_plans_its_upsampling_from_the_clip_length():
    assert wavegan.plan_layers(16384) == (5, 16)  # the paper
    assert wavegan.plan_layers(64000) == (4, 250)  # 4 s at 16 kHz
    assert wavegan.plan_layers(16000) == (3, 250)  # 1 s at 16 kHz
    assert wavegan.plan_layers(12345) == (5, 13)  # 13 * 1024 >= 12345, cropped


def test_wavegan_at_d64_and_16384_samples_has_the_papers_19m_generator():
    generator = wavegan.Generator(wavegan.WaveGANConfig(16384, latent_dim=100, model_dim=64))
    assert parameter_count(generator) == pytest.approx(19.07e6, rel=0.005)


def test_phase_shuffle_shifts_the_whole_batch_and_keeps_length():
    x = torch.arange(20.0).repeat(2, 3, 1)  # (2, 3, 20)
    seen = set()
    for seed in range(40):
        shifted = wavegan.phase_shuffle(x, 2, torch.Generator().manual_seed(seed))
        assert shifted.shape == x.shape
        shift = int(shifted[0, 0, 10] - x[0, 0, 10]) * -1
        seen.add(shift)
        assert torch.equal(shifted[0], shifted[1])  # one shift for the whole batch
        if shift > 0:  # content moved right, the left edge is a reflection
            assert torch.equal(shifted[..., shift:], x[..., :-shift])
            assert torch.equal(shifted[0, 0, :shift], x[0, 0, 1 : shift + 1].flip(0))
    assert seen == {-2, -1, 0, 1, 2}
    assert torch.equal(wavegan.phase_shuffle(x, 0), x)


def test_the_baseline_keeps_the_original_layers():
    generator = dcgan.Generator(dcgan.DCGANConfig(64000))
    convs = [m for m in generator.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [
        (16, 20), (32, 25), (64, 50), (64, 100),
    ]  # fmt: skip
    assert generator.dense[0].out_features == 1000  # 1000 steps x 64 channels = 64,000 samples
    discriminator = dcgan.Discriminator(dcgan.DCGANConfig(64000))
    convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (32, 100, 7), (16, 50, 5), (8, 25, 3),
    ]  # fmt: skip
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in discriminator.modules())


@pytest.mark.parametrize("model", ["wavegan", "dcgan"])
def test_conditional_models_take_a_label_and_it_matters(model):
    cfg = TrainConfig(model=model, model_dim=4, latent_dim=8, conditional=True)
    torch.manual_seed(0)
    generator, discriminator = build(cfg, 16000, num_classes=3)
    generator.eval()
    z = torch.rand(2, 8)
    a = generator(z, torch.tensor([0, 0]))
    b = generator(z, torch.tensor([2, 2]))
    assert a.shape == (2, 1, 16000) and not torch.allclose(a, b)
    logits, _ = discriminator(a, torch.tensor([0, 1]))
    assert logits.shape == (2,)


def _conv_out(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


def _period_patches(clip_samples: int, period: int) -> int:
    rows = -(-clip_samples // period)  # reflect-padded to a whole number of periods
    for _ in range(3):
        rows = _conv_out(rows, 5, 3, 2)
    return rows * period


def _scale_patches(length: int) -> int:
    return _conv_out(_conv_out(length, 15, 4, 7), 15, 4, 7)


def _stft_patches(clip_samples: int, n_fft: int) -> int:
    frames = clip_samples // (n_fft // 4) + 1
    return _conv_out(_conv_out(frames, 5, 2, 2), 5, 2, 2)


@pytest.mark.parametrize("clip_samples", [16000, 64000])  # 1 s and 4 s at 16 kHz
@pytest.mark.parametrize("family", ["multiscale", "stft"])
def test_each_discriminator_family_returns_logits_and_feature_maps_of_the_expected_shapes(
    family, clip_samples
):
    cfg = TrainConfig(model_dim=4, latent_dim=8, discriminator=family, disc_channels=4)
    _, discriminator = build(cfg, clip_samples)
    audio = torch.rand(2, 1, clip_samples) * 2 - 1
    logits, features = discriminator(audio)
    if family == "multiscale":
        expected = [_period_patches(clip_samples, p) for p in multiscale.PERIODS]
        expected += [_scale_patches(clip_samples // 2**i) for i in range(multiscale.SCALES)]
        maps_per_sub, first_map = 4, (2, 4, _conv_out(-(-clip_samples // 2), 5, 3, 2), 2)
    else:
        expected = [_stft_patches(clip_samples, n_fft) for n_fft in stft.RESOLUTIONS]
        maps_per_sub, first_map = 4, (2, 32, clip_samples // 64 + 1)  # (B, 8c, frames)
    assert [tuple(part.shape) for part in logits] == [(2, n) for n in expected]
    assert len(features) == maps_per_sub * len(expected)
    assert tuple(features[0].shape) == first_map
    assert all(f.shape[0] == 2 and f.shape[1] >= 4 for f in features)
    # Both families judge patches: a change to the clip's start moves only some logits.
    changed = audio.clone()
    changed[..., :200] = 0
    moved, _ = discriminator(changed)
    assert all(0 < (a != b).sum() < a.numel() for a, b in zip(logits, moved, strict=True))


@pytest.mark.parametrize("family", ["model", "multiscale", "stft"])
def test_spectral_norm_is_on_every_layer_of_d_where_configured_and_nowhere_else(family):
    layers = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)
    for wanted in (True, False):
        cfg = TrainConfig(model_dim=4, latent_dim=8, discriminator=family, disc_channels=4,
                          spectral_norm=wanted)  # fmt: skip
        generator, discriminator = build(cfg, 4000)
        weighted = [m for m in discriminator.modules() if isinstance(m, layers)]
        assert weighted and all(
            parametrize.is_parametrized(m, "weight") == wanted for m in weighted
        )
        assert not any(parametrize.is_parametrized(m) for m in generator.modules())
    # The normalised weight's largest singular value is 1, whatever the layer's raw scale.
    cfg = TrainConfig(model_dim=4, latent_dim=8, discriminator=family, disc_channels=4,
                      spectral_norm=True)  # fmt: skip
    _, discriminator = build(cfg, 4000)
    layer = next(m for m in discriminator.modules() if isinstance(m, layers))
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(7.0)
    for _ in range(30):  # power iterations, one per training forward
        layer.weight  # noqa: B018 - reading the weight runs one
    sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, rel=1e-3)


def test_conditional_models_need_a_discriminator_that_projects_the_label():
    with pytest.raises(ConfigError, match="conditional=true needs discriminator=model"):
        TrainConfig(conditional=True, discriminator="multiscale")
    cfg = TrainConfig(model_dim=4, latent_dim=8, discriminator="stft", disc_channels=2,
                      conditional=True)  # fmt: skip
    _, discriminator = build(cfg, 4000, num_classes=3)
    audio = torch.rand(2, 1, 4000) * 2 - 1
    a, _ = discriminator(audio, torch.tensor([0, 0]))
    b, _ = discriminator(audio, torch.tensor([2, 2]))
    assert all(x.shape == y.shape and not torch.allclose(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ConfigError, match="model=ddsp has no discriminator of its own"):
        TrainConfig(model="ddsp")


def test_the_harmonic_generator_plays_the_pitch_and_harmonics_its_controls_say():
    torch.manual_seed(0)
    cfg = ddsp.DDSPConfig(16000, sample_rate_hz=16000, latent_dim=8, model_dim=4)
    generator = ddsp.Generator(cfg)
    z = torch.rand(3, 8) * 2 - 1
    audio = generator(z)
    assert audio.shape == (3, 1, 16000) and audio.abs().max() <= 1
    f0_hz, loudness, harmonics, noise = generator.control_frames(z)
    assert f0_hz.shape == loudness.shape == (3, 1, cfg.frames)  # one source
    assert harmonics.shape == (3, 1, ddsp.HARMONICS, cfg.frames)
    assert noise.shape == (3, ddsp.NOISE_BANDS, cfg.frames)
    low, high = ddsp.F0_RANGE_HZ
    assert ((f0_hz >= low / 2) & (f0_hz <= high * 2)).all()
    torch.testing.assert_close(harmonics.sum(dim=2), torch.ones(3, 1, cfg.frames))

    # The wavetable oscillators against B x K x T sines, for amplitudes and a pitch that move.
    frames, samples = 20, 2500
    amplitudes = torch.rand(2, ddsp.HARMONICS, frames) / ddsp.HARMONICS
    f0 = torch.linspace(110, 440, samples).repeat(2, 1)
    cycles = torch.cumsum(f0.double() / 16000, dim=1).remainder(1.0).float()
    along = F.interpolate(amplitudes, size=samples, mode="linear", align_corners=True)
    numbers = torch.arange(1, ddsp.HARMONICS + 1).float()[None, :, None]
    expected = (along * torch.sin(2 * math.pi * numbers * cycles[:, None])).sum(dim=1)
    played = generator.play(amplitudes, cycles)
    assert (played - expected).abs().max() < 5e-3 * expected.abs().max()


def test_the_harmonic_generators_tone_peaks_at_its_f0_and_has_nothing_above_nyquist():
    torch.manual_seed(1)
    cfg = ddsp.DDSPConfig(16000, sample_rate_hz=16000, latent_dim=8, model_dim=4)
    generator = ddsp.Generator(cfg)
    f0, frames = 1500.0, cfg.frames
    # Every harmonic equally loud: 5 lie under 8 kHz (1.5, 3, ..., 7.5 kHz), 43 above.
    amplitudes = torch.full((1, 1, ddsp.HARMONICS, frames), 1.0 / ddsp.HARMONICS)
    generator.control_frames = lambda z, labels=None: (
        torch.full((1, 1, frames), f0),
        torch.ones(1, 1, frames),
        amplitudes,
        torch.zeros(1, ddsp.NOISE_BANDS, frames),
    )
    audio = generator(torch.zeros(1, 8))[0, 0]
    spectrum = torch.fft.rfft(audio * torch.hann_window(16000)).abs()  # 1 Hz bins
    peaks = spectrum[100:].topk(5).indices + 100
    assert sorted((peaks.float() / f0).round().tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert spectrum[int(f0) - 5 : int(f0) + 6].max() > 100 * spectrum[7700:].max()


def test_the_harmonic_synthesiser_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(2)
    generator = ddsp.Generator(ddsp.DDSPConfig(4000, latent_dim=8, model_dim=4))
    z = torch.rand(2, 8) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        audio = generator(z)
    assert audio.dtype == torch.float32 and torch.isfinite(audio).all()
    # With the same controls, the sound is the same to the bit with and without autocast.
    controls = [c.detach() for c in generator.control_frames(z)]
    generator.control_frames = lambda z, labels=None: controls
    outputs = []
    for autocast in (False, True):
        torch.manual_seed(3)  # the same noise
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outputs.append(generator(z))
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("clip_samples", [16000, 64000])
def test_a_harmonic_generator_of_two_sources_makes_finite_clips_of_the_length_asked_for(
    clip_samples,
):
    torch.manual_seed(0)
    cfg = ddsp.DDSPConfig(clip_samples, latent_dim=8, model_dim=4, num_classes=3, sources=2)
    generator = ddsp.Generator(cfg)
    audio = generator(torch.rand(2, 8) * 2 - 1, torch.tensor([0, 2]))
    assert audio.shape == (2, 1, clip_samples)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1
    f0_hz, loudness, _, _ = generator.control_frames(torch.rand(2, 8) * 2 - 1, torch.tensor([1, 1]))
    assert f0_hz.shape == (2, 2, cfg.frames)
    assert not torch.allclose(f0_hz[:, 0], f0_hz[:, 1])  # each source has a pitch of its own
    assert (loudness[:, 1] < loudness[:, 0]).all()  # the second starts quieter


def test_a_harmonic_generator_of_two_sources_sounds_two_pitches_at_once():
    cfg = ddsp.DDSPConfig(16000, latent_dim=8, model_dim=4, sources=2)
    generator = ddsp.Generator(cfg)
    frames = cfg.frames
    harmonics = torch.zeros(1, 2, ddsp.HARMONICS, frames)
    harmonics[:, :, 0] = 1.0  # each source only its fundamental
    f0 = torch.tensor([220.0, 330.0])[None, :, None].expand(1, 2, frames)
    noise = torch.zeros(1, ddsp.NOISE_BANDS, frames)
    chord = generator.synthesise(f0, torch.full((1, 2, frames), 0.4), harmonics, noise)[0, 0]
    spectrum = torch.fft.rfft(chord * torch.hann_window(16000)).abs()  # 1 Hz bins
    assert sorted(spectrum[50:2000].topk(2).indices.add(50).tolist()) == [220, 330]


def test_each_source_of_each_clip_is_played_with_its_own_controls():
    # Two clips of two sources, every (clip, source) with its own pitch, loudness and
    # harmonics: the sum of the four played alone by a one-source generator (before tanh).
    torch.manual_seed(0)
    cfg = ddsp.DDSPConfig(4000, latent_dim=8, model_dim=4, sources=2)
    frames = cfg.frames
    f0 = torch.tensor([[110.0, 330.0], [220.0, 550.0]])[..., None] * torch.linspace(1, 1.1, frames)
    loudness = torch.rand(2, 2, frames) * 0.2 + 0.05
    harmonics = torch.softmax(torch.randn(2, 2, ddsp.HARMONICS, frames) * 3, dim=2)
    noise = torch.zeros(2, ddsp.NOISE_BANDS, frames)
    both = ddsp.Generator(cfg).synthesise(f0, loudness, harmonics, noise)
    one = ddsp.Generator(ddsp.DDSPConfig(4000, latent_dim=8, model_dim=4))
    for clip in range(2):
        alone = [
            one.synthesise(f0[clip : clip + 1, s : s + 1], loudness[clip : clip + 1, s : s + 1],
                           harmonics[clip : clip + 1, s : s + 1], noise[:1]).atanh()
            for s in range(2)
        ]  # fmt: skip
        torch.testing.assert_close(both[clip : clip + 1], torch.tanh(alone[0] + alone[1]),
                                   atol=1e-5, rtol=1e-4)  # fmt: skip


def test_each_source_starts_as_a_1_over_k_tone_each_quieter_than_the_one_before():
    cfg = ddsp.DDSPConfig(4000, latent_dim=8, model_dim=4, sources=3)
    generator = ddsp.Generator(cfg)
    with torch.no_grad():
        generator.controls.weight.zero_()  # the controls are their biases alone
    _, loudness, harmonics, noise = generator.control_frames(torch.rand(2, 8))
    for s in range(3):
        expected = ddsp.scaled_sigmoid(torch.tensor(ddsp.LOUDNESS_BIAS - s))
        torch.testing.assert_close(loudness[:, s], expected.expand(2, cfg.frames))
    inverse_k = 1 / torch.arange(1.0, ddsp.HARMONICS + 1)
    torch.testing.assert_close(
        harmonics, (inverse_k / inverse_k.sum())[None, None, :, None].expand_as(harmonics)
    )
    expected_noise = ddsp.scaled_sigmoid(torch.tensor(ddsp.NOISE_BIAS))
    torch.testing.assert_close(noise, expected_noise.expand_as(noise))


def test_one_source_keeps_the_parameters_earlier_checkpoints_hold():
    cfg = ddsp.DDSPConfig(4000, latent_dim=8, model_dim=4, num_classes=3)
    shapes = {k: tuple(v.shape) for k, v in ddsp.Generator(cfg).state_dict().items()}
    assert shapes["clip_pitch.weight"] == (1, 8 + 8)  # z and the label's embedding
    assert shapes["pitch_bend.weight"] == (1, 8 * 4, 1)
    assert shapes["controls.weight"] == (1 + ddsp.HARMONICS + ddsp.NOISE_BANDS, 4, 1)


@pytest.mark.parametrize("clip_samples", [16000, 64000])
def test_the_hybrid_generator_makes_finite_clips_of_the_length_asked_for(clip_samples):
    torch.manual_seed(0)
    cfg = ddsp.DDSPConfig(clip_samples, latent_dim=8, model_dim=4, num_classes=3)
    generator = hybrid.Generator(cfg)
    audio = generator(torch.rand(2, 8) * 2 - 1, torch.tensor([0, 2]))
    assert audio.shape == (2, 1, clip_samples)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1
    assert generator.residual_gain.item() == 0.0  # the learned waveform starts silent


def _hybrid_controls(frames: int, f0_hz: torch.Tensor, second_hz: float, second_loudness: float):
    """Controls for hybrid.Generator.synthesise: source 0 at f0_hz (per frame) and source 1 at
    second_hz, each with only its fundamental; no noise, no residual."""
    harmonics = torch.zeros(1, hybrid.SOURCES, ddsp.HARMONICS, frames)
    harmonics[:, :, 0] = 1.0
    f0 = torch.stack([f0_hz, torch.full((frames,), second_hz)])[None]
    loudness = torch.tensor([0.5, second_loudness])[None, :, None].expand(1, 2, frames)
    transient_frames = frames * ddsp.HOP // hybrid.TRANSIENT_HOP
    return (f0, loudness, harmonics, torch.zeros(1, hybrid.NOISE_BANDS, frames),
            torch.zeros(1, hybrid.TRANSIENT_BANDS, transient_frames))  # fmt: skip


def test_the_hybrid_generator_sounds_two_pitches_at_once_and_a_pitch_that_falls_octaves():
    cfg = ddsp.DDSPConfig(16000, latent_dim=8, model_dim=4)
    generator = hybrid.Generator(cfg)
    frames = cfg.frames
    chord = generator.synthesise(
        *_hybrid_controls(frames, torch.full((frames,), 220.0), 330.0, 0.5),
        residual=torch.zeros(1, 16000),
    )[0, 0]
    spectrum = torch.fft.rfft(chord * torch.hann_window(16000)).abs()  # 1 Hz bins
    assert sorted(spectrum[50:2000].topk(2).indices.add(50).tolist()) == [220, 330]
    sweep = torch.logspace(math.log10(400), math.log10(50), frames)  # three octaves in 1 s
    falling = generator.synthesise(
        *_hybrid_controls(frames, sweep, 1000.0, 0.0), residual=torch.zeros(1, 16000)
    )[0, 0]
    early, late = (
        torch.fft.rfft(part * torch.hann_window(4000), n=16000).abs()[20:].argmax().item() + 20
        for part in (falling[:4000], falling[-4000:])
    )
    assert early > 250 and late < 90, (early, late)  # Hz (1 Hz bins of the padded FFT)


def test_the_hybrid_generators_transient_noise_makes_a_burst_shorter_than_a_frame():
    cfg = ddsp.DDSPConfig(16000, latent_dim=8, model_dim=4)
    generator = hybrid.Generator(cfg)
    controls = list(_hybrid_controls(cfg.frames, torch.full((cfg.frames,), 220.0), 330.0, 0.0))
    controls[1] = torch.zeros_like(controls[1])  # no tone
    controls[4][..., 250] = 1.0  # one transient frame: sample 250 x 32 = 8000
    torch.manual_seed(0)
    burst = generator.synthesise(*controls, residual=torch.zeros(1, 16000))[0, 0]
    energy = burst.square()
    assert energy[8000 - 80 : 8000 + 80].sum() > 0.9 * energy.sum()  # within 10 ms, not 8 ms x 3


def _d_logits(discriminator, audio: torch.Tensor, train: bool) -> torch.Tensor:
    """Every family's D output as one flat tensor, in train or eval mode; BatchNorm (the 2019
    baseline's) kept on its running statistics, so that only dropout tells the modes apart."""
    discriminator.train(train)
    for layer in discriminator.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.eval()
    with torch.no_grad():
        out = discriminator(audio)[0]
    return torch.cat([p.flatten() for p in out]) if isinstance(out, list) else out.flatten()


@pytest.mark.parametrize(
    "model,family",
    [
        ("dcgan", "model"),
        ("wavegan", "model"),
        ("wavegan", "multiscale"),
        ("wavegan", "stft"),
    ],  # fmt: skip
)
def test_dropout_acts_in_every_discriminator_family(model, family):
    """With dropout > 0 a D's output in train mode differs from eval mode's, and between two
    train-mode calls; with dropout 0 the three agree."""
    audio = torch.rand(2, 1, 16000) * 2 - 1
    for dropout, acts in ((0.3, True), (0.0, False)):
        # (WaveGAN's phase shuffle acts in train mode only: off here)
        cfg = TrainConfig(model=model, model_dim=4, latent_dim=8, discriminator=family,
                          disc_channels=4, dropout=dropout, phase_shuffle=0)  # fmt: skip
        torch.manual_seed(0)
        _, discriminator = build(cfg, 16000)
        first, second = (_d_logits(discriminator, audio, True) for _ in range(2))
        evaluated = _d_logits(discriminator, audio, False)
        assert (not torch.equal(first, evaluated)) == acts, (dropout, family)
        assert (not torch.equal(first, second)) == acts, (dropout, family)


def _torch_log_magnitude(audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """What the STFT discriminator computed with torch.stft before it had its own backward."""
    window = torch.hann_window(n_fft, dtype=audio.dtype)
    spec = torch.stft(audio, n_fft, hop, window=window, normalized=True, return_complex=True)
    return 0.5 * torch.log(spec.real.square() + spec.imag.square() + stft.POWER_FLOOR)


@pytest.mark.parametrize("n_fft, hop", [(256, 64), (512, 128), (1024, 256), (200, 50)])
def test_the_stft_discriminators_spectrogram_and_its_gradients_are_torch_stfts(n_fft, hop):
    """log_magnitude has a backward of its own (an irfft and an overlap-add instead of
    torch.stft's full complex FFT and scatter): its values, its gradient (G's path through D)
    and its gradient's gradient (R1's double backward) are torch.stft's, to float64 rounding."""
    torch.manual_seed(0)
    audio = (torch.rand(3, 4000, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    ours = stft.log_magnitude(audio, n_fft, hop)
    reference = _torch_log_magnitude(audio, n_fft, hop)
    assert ours.shape == reference.shape == (3, n_fft // 2 + 1, 4000 // hop + 1)
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)

    weights = torch.randn_like(reference)  # a loss that weighs every bin differently
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), audio, create_graph=True)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), audio, create_graph=True)
    torch.testing.assert_close(
        grad_ours, grad_ref, rtol=1e-10, atol=1e-10 * grad_ref.abs().max().item()
    )
    (second_ours,) = torch.autograd.grad(grad_ours.square().sum(), audio)
    (second_ref,) = torch.autograd.grad(grad_ref.square().sum(), audio)
    torch.testing.assert_close(
        second_ours, second_ref, rtol=1e-9, atol=1e-9 * second_ref.abs().max().item()
    )


def test_the_windowed_fft_passes_gradcheck_and_wants_whole_hops():
    window = torch.hann_window(64, dtype=torch.float64)
    signal = torch.randn(2, 300, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: stft.WindowedRFFT.apply(x, window, 16), (signal,))
    assert torch.autograd.gradgradcheck(lambda x: stft.WindowedRFFT.apply(x, window, 16), (signal,))
    with pytest.raises(ValueError, match="multiple of hop"):
        stft.WindowedRFFT.apply(signal, window, 24)
