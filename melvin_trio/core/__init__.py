"""The sans-IO core: decisions about audio, agreement, partials and finals, and the wire format.

Nothing here imports trio or the engine; everything is tested without an event loop.
"""
