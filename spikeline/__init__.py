"""spikeline: event data -> trained spiking network -> verified neuromorphic artifact -> energy."""
__version__ = "0.1.0"
