"""melvin-trio: a real-time speech-to-text server speaking the Melvin ASR WebSocket protocol."""

__version__ = "0.1.0"
