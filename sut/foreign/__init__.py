"""The foreign SFU: a plain mediasoup gateway with its own signaling dialect (see README.md)."""
