"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.controlplane.schemathesis_hooks): how to make the
values of the control plane's custom OpenAPI formats. A cursor is opaque and only one this server
could have handed out is valid, so positive cases use such cursors; anything else is a negative case.
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

from controlplane.clock import format_ts
from controlplane.pagination import (
    CURSOR_FORMAT,
    EXPORT_CURSOR_FORMAT,
    MAX_SEQ,
    encode_cursor,
    encode_export_cursor,
)

_SEQ = st.integers(min_value=0, max_value=MAX_SEQ)
_TS = st.integers(min_value=0, max_value=4_102_444_800).map(format_ts)  # 1970 .. 2100

schemathesis.openapi.format(CURSOR_FORMAT, _SEQ.map(encode_cursor))
schemathesis.openapi.format(EXPORT_CURSOR_FORMAT, st.tuples(_TS, _SEQ).map(encode_export_cursor))
