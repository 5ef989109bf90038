"""Strip heads, fold BatchNorm, quantize, export (NIR, netx), simulate, verify, energy."""
