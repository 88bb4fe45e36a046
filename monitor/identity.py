"""Pure identity decisions: canonical URLs, entry keys, article ids, content hashes, is-it-new.

Identity is deterministic so that re-running never duplicates: the article id is a UUIDv5 of
the canonical URL, and later stages derive their own ids (vector points, alerts) from it.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode, urljoin, urlsplit, urlunsplit

from monitor.types import ParsedEntry

#: Query parameters that only track the reader and never select content.
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "ysclid", "igshid",
        "mc_cid", "mc_eid", "_ga", "_gl", "_hsenc", "_hsmi", "mkt_tok", "ocid", "cmpid",
        "ref_src", "ref_url", "at_medium", "at_campaign", "at_custom1", "at_custom2",
        "at_custom3", "at_custom4", "at_link", "at_format", "at_ptr_name", "at_bbc_team",
        "ns_mchannel", "ns_source", "ns_campaign", "ns_linkname", "ns_fee", "xtor", "wt_mc",
        "wt_zmc", "smid", "spm",
    }
)  # fmt: skip
TRACKING_PREFIXES = ("utm_", "at_", "ns_", "pk_", "mtm_", "wt_", "itm_")

DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_url(url: str, base: str | None = None) -> str:
    """A normalised absolute URL: relative links resolved, host lower-cased, default port,
    fragment and tracking parameters removed. Scheme-less or non-http URLs, and URLs that do
    not parse (a bad port or IPv6 literal), are returned resolved but otherwise untouched
    (they are not fetchable anyway; ``is_web_url`` tells them apart).

    Idempotent: percent-escapes are decoded and re-encoded byte for byte (``%25`` stays one,
    bytes that are not UTF-8 keep their escape), so a canonical URL is its own canonical form.
    """
    url = _trim(url)
    try:
        if base and not _ABSOLUTE.match(url):  # urljoin would rewrite an absolute URL a bit
            url = _trim(urljoin(base, url))  # joining drops what urlsplit drops: trim again
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            return url
        port = parts.port if parts.port not in (None, DEFAULT_PORTS[scheme]) else None
    except ValueError:
        return url
    host = _normalise_host(parts.hostname)
    netloc = f"{host}:{port}" if port else host
    path = quote(_unquote(parts.path), safe="/:@!$&'()*+,;=~-._", errors=_BYTES) or "/"
    query = urlencode(
        [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True, errors=_BYTES)
            if not _tracking(k)
        ],
        errors=_BYTES,
    )
    return urlunsplit((scheme, netloc, path, query, ""))


_EDGES = re.compile(r"^[\s\x00-\x20]+|[\s\x00-\x20]+$")
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _trim(url: str) -> str:
    """``url`` without white space and C0 controls around it (urlsplit drops leading ones)."""
    return _EDGES.sub("", url)


#: percent-escapes of bytes that are not UTF-8 survive decoding (as surrogates) and re-encoding
_BYTES = "surrogateescape"


def _unquote(text: str) -> str:
    return unquote(text, errors=_BYTES)


def is_web_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL that can be fetched: a host, a valid port,
    no whitespace or control characters."""
    if not url or any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return False
    return parts.scheme.lower() in DEFAULT_PORTS and bool(parts.hostname)


def _normalise_host(hostname: str) -> str:
    host = hostname.lower().rstrip(".")
    if ":" in host:  # IPv6 literal
        return f"[{host}]"
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _tracking(param: str) -> bool:
    name = param.lower()
    return name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES)


def same_site(url_a: str, url_b: str) -> bool:
    """Whether two URLs belong to the same site (host equal up to ``www.``/``m.``/``amp.``).

    A page may name its canonical URL; we only believe it when it stays on the same site, so a
    hostile page cannot claim another outlet's article as its own.
    """
    return _site(url_a) == _site(url_b) != ""


def _site(url: str) -> str:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:  # an IPv6 literal that is not one
        return ""
    labels = [p for p in host.split(".") if p]
    while len(labels) > 2 and labels[0] in {"www", "m", "amp", "mobile"}:
        labels = labels[1:]
    return ".".join(labels)


def entry_key(entry: ParsedEntry, link: str | None) -> str:
    """Stable key of an entry within its feed: guid, else canonical link, else a text hash."""
    if entry.guid and entry.guid.strip():
        return "guid:" + entry.guid.strip()
    if link:
        return "url:" + link
    return "hash:" + _sha256(f"{entry.title}\n{entry.summary}")[:32]


def article_id(canonical: str | None, *, feed: str, key: str) -> str:
    """Deterministic article id: from the canonical URL, or from feed + entry key without one."""
    name = canonical if canonical else f"newsmon:{feed}:{key}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


_WS = re.compile(r"\s+")


def content_hash(title: str, text: str) -> str:
    """Hash of what a reader sees; whitespace-insensitive so re-wrapped feeds are no update."""
    return _sha256(_WS.sub(" ", title).strip() + "\n" + _WS.sub(" ", text).strip())


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class EntryChange(enum.StrEnum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def classify_entry(key: str, digest: str, known: Mapping[str, str]) -> EntryChange:
    """Is this entry new, an update of a known one (title or text changed), or unchanged?"""
    stored = known.get(key)
    if stored is None:
        return EntryChange.NEW
    return EntryChange.UNCHANGED if stored == digest else EntryChange.UPDATED
