"""SLAYER-compatible CUBA-LIF blocks, spiking ResNets, shortcut heads and training."""
