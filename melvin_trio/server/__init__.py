"""The I/O drivers around the core: WebSocket sessions, engine workers, exports and the REST app."""
