"""The sans-IO core: decisions about audio, agreement, partials and finals, and the wire format.

Nothing here imports trio or the engine; everything is tested without an event loop.
"""

from typing import Final

SAMPLE_RATE: Final = 16000  # Hz: the protocol's, the engine's and the core's one sample rate
