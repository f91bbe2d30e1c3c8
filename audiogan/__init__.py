"""audiogan: generative adversarial networks on raw audio, trained on Ray.

`audiogan.load(checkpoint_url)` gives a trained generator to call from Python (audiogan/api.py).
"""

__version__ = "0.1.0"


def load(checkpoint_url: str):
    """A checkpoint's generator, with .generate(n, label, seed), .interpolate(seed_a, seed_b,
    steps, label) and .labels: see audiogan.api.TrainedGenerator. (Imported here, not at
    `import audiogan`, so that importing the package stays free of torch.)"""
    from audiogan.api import load as load_generator

    return load_generator(checkpoint_url)
