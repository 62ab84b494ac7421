"""TLS without a proxy: `tls.certfile` and `tls.keyfile` make the WebSocket server speak wss:// and the REST server
https://, each on its usual port."""

from __future__ import annotations

import ssl

from melvin_trio.config import Config, ConfigError


def server_context(config: Config) -> ssl.SSLContext | None:
    """The server-side SSL context of the configured certificate, or None without TLS. Raises ConfigError when the
    files are missing or do not belong together, so `serve` stops at start with one clear line."""
    tls = config.tls
    if tls.certfile is None or tls.keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    for key, path in (("certfile", tls.certfile), ("keyfile", tls.keyfile)):
        if not path.is_file():
            raise ConfigError(f"tls.{key}: {path}: file not found")
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls: cannot load {tls.certfile} with {tls.keyfile}: {exc}") from None
    return context
