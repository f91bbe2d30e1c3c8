"""audiogan: generative adversarial networks on raw audio, trained on Ray."""

__version__ = "0.1.0"
