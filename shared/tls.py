"""The TLS context of a process's outgoing HTTPS calls with httpx's defaults, made once.

httpx makes a context for each client it creates (loading the CA bundle into it, ~0.8 MB of
memory each, issue 14), although every client that uses the defaults would hold the same one.
A client that needs its own (a CA bundle of its own, a client certificate) still makes it."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """httpx's default verification: its CA bundle, or `SSL_CERT_FILE`/`SSL_CERT_DIR`. Shared:
    do not load a client certificate into it."""
    return httpx.create_ssl_context()
