"""HTTP/1.1 grammar: one compiled pattern per rule, beside the ABNF it implements.

RFC 9110 §5.6 (tokens, field values) and RFC 9112 §2 to §7 (message lines, chunked coding). Where
we deviate from the RFC it is to be stricter, never more lenient: no obs-fold, no bare CR or LF,
no control character anywhere in a head (h11 refuses NUL and whitespace for the same reason:
lenient parsers in front of strict ones are how requests get smuggled).
"""

from __future__ import annotations

import re

__all__ = [
    "AUTHORITY",
    "CHUNK_LINE",
    "FIELD_CHARS",
    "FIELD_LINE",
    "MAX_CHUNK_LINE",
    "REQUEST_LINE",
    "STATUS_LINE",
    "TCHARS",
    "TOKEN",
    "has_ctl",
]

# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~"
#       / DIGIT / ALPHA ;  token = 1*tchar
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
TOKEN = re.compile(_TOKEN)

# field-vchar = VCHAR / obs-text ; field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
# field-value = *field-content ; field-line = field-name ":" OWS field-value OWS
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
_FIELD_VALUE = _VCHAR + rb"+(?:[ \t]+" + _VCHAR + rb"+)*"
FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _FIELD_VALUE + rb")?[ \t]*")
# The same two rules as byte sets, for the hot path (bytes.translate deletes them in one C pass; what
# is left over is what the rule refuses): tchar, and field-value's SP / HTAB / VCHAR / obs-text.
TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FIELD_CHARS = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))

# request-line = method SP request-target SP HTTP-version ; HTTP-version = "HTTP/" DIGIT "." DIGIT
# request-target: visible ASCII only (RFC 3986 characters; no whitespace, no CTL, no obs-text).
# Deviation: method = token, but nginx refuses any method outside upper-case letters, "-" and "_"
# (400), and a request nginx refuses is refused here too.
_METHOD = rb"[A-Z_-]+"
REQUEST_LINE = re.compile(rb"(" + _METHOD + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")

# status-line = HTTP-version SP status-code SP [ reason-phrase ]
# reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ). Deviation: the SP before an empty reason may be
# missing (common in the wild, and harmless: the status code is fixed width). status-code = 3DIGIT,
# and RFC 9110 §15 makes only 100 to 599 valid (a "099" would otherwise pass for an interim response).
STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([1-5][0-9]{2})(?: ([\t \x21-\x7e\x80-\xff]*))?")

# authority = host [ ":" port ] ; host = IP-literal / IPv4address / reg-name ; port = *DIGIT
# reg-name = *( unreserved / pct-encoded / sub-delims ). Deviation: reg-name must not be empty.
AUTHORITY = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[-A-Za-z0-9._~!$&'()*+,;=%]+)(?::([0-9]{1,5}))?")

# chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF ; chunk-size = 1*HEXDIG
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
# chunk-ext-val = token / quoted-string. Deviation: chunk-size is bounded to 16 hex digits.
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*"
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})" + _CHUNK_EXT)
MAX_CHUNK_LINE = 4096  # a chunk-size line (with extensions) longer than this is refused

_CTL = re.compile(r"[\x00-\x1f\x7f]")


def has_ctl(value: str) -> bool:
    """True when `value` holds a control character (CR, LF, NUL, …): never written into a header."""
    return _CTL.search(value) is not None
