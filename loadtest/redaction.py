"""Secrets never reach a file or a log: URL userinfo and query values, auth tokens, TURN credentials.

Two layers, applied wherever the tester prints or writes text it did not author itself:

* ``redact_url``: a URL as shown to people -- userinfo and every query value become ``***``
  (``https://u:p@gw/?key=S`` → ``https://***@gw/?key=***``); scheme, host, port and path stay.
* ``scrub``: any text -- every URL inside it loses its userinfo and secret-sounding query values (``key``,
  ``token`` …; ``?language=en`` stays), then every registered secret (the run's
  token, TURN credential, URL query values and userinfo; ``register``) replaced, raw and
  percent-encoded. Secrets shorter than ``MIN_SECRET_LEN`` are not registered (replacing ``"en"``
  everywhere would mangle the text; the URLs they came from are still redacted structurally).

``install_log_scrubbing`` makes every log record of the process go through ``scrub`` (message, arguments
and traceback text), whichever library logs it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit, urlunsplit

MASK = "***"
MIN_SECRET_LEN = 4
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")
_SECRET_KEY = re.compile(r"key|token|secret|pass|auth|cred|sig|session|jwt|code", re.IGNORECASE)
_SECRETS: set[str] = set()
_INSTALLED = False


def redact_url(url: str) -> str:
    """The URL with its userinfo and query values masked (a fragment is dropped); unchanged otherwise."""
    # key=value keeps its key; a bare component (?SECRET) is all value.
    return _masked(url, lambda c: (f"{c.partition('=')[0]}={MASK}" if "=" in c else MASK) if c else None)


def _masked(url: str, component: Callable[[str], str | None]) -> str:
    """The URL with its userinfo masked, each query component replaced by `component` (None drops it), and
    the fragment dropped; MASK when it does not parse."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    kept = (component(c) for c in parts.query.split("&")) if parts.query else iter(())
    query = "&".join(c for c in kept if c is not None)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_secrets(url: str) -> list[str]:
    """What a URL carries that must not be shown: user name, password, query values, fragment."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [parts.username or "", parts.password or "", parts.fragment]
    found += [c.partition("=")[2] if "=" in c else c for c in parts.query.split("&")]
    return [unquote_plus(s) for s in found if s]


def register(*values: str | None) -> None:
    """Remember secrets of this run, so `scrub` removes them from any text."""
    for value in values:
        if value and len(value) >= MIN_SECRET_LEN:
            _SECRETS.update({value, quote(value, safe=""), quote_plus(value)})


def register_url(url: str | None) -> None:
    if url:
        register(*url_secrets(url))


def forget_all() -> None:
    """Tests: start from no registered secret."""
    _SECRETS.clear()


def _redact_in_text(url: str) -> str:
    """A URL met inside some text (an error message): userinfo masked, and the values of secret-sounding
    query keys (token, key, …); other values stay readable (`?language=en`) -- the run's own secrets
    are masked wherever they stand by `scrub`'s registered list."""
    return _masked(url, _query_part)


def _query_part(component: str) -> str:
    key, eq, _ = component.partition("=")
    return f"{key}={MASK}" if eq and _SECRET_KEY.search(key) else component


def scrub(text: str) -> str:
    """`text` with every URL's credentials masked and every registered secret masked."""
    if "://" in text:
        text = _URL.sub(lambda m: _redact_in_text(m.group(0)), text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_tree(value: Any) -> Any:
    """`scrub` through dicts, lists, tuples and dataclass instances (copies; the input is not changed)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [scrub_tree(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: scrub_tree(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


def install_log_scrubbing() -> None:
    """Every log record created from now on carries scrubbed text (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            record.msg, record.args = scrub(record.getMessage()), None
            if record.exc_info and not record.exc_text:
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        except Exception:  # noqa: BLE001 -- a record that cannot be formatted is logged as it was
            pass
        return record

    logging.setLogRecordFactory(factory)
