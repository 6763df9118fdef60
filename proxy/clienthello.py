"""Just enough TLS to route a redirected connection: is it a ClientHello, and for which server name."""

from __future__ import annotations

import struct

__all__ = ["is_tls", "parse_sni", "record_complete"]

_HANDSHAKE, _CLIENT_HELLO, _SNI_EXT, _HOST_NAME = 0x16, 0x01, 0x0000, 0


def is_tls(data: bytes) -> bool:
    return len(data) >= 3 and data[0] == _HANDSHAKE and data[1] == 3


def record_complete(data: bytes) -> bool:
    """True once the first TLS record is entirely in `data`."""
    return len(data) >= 5 and len(data) >= 5 + struct.unpack_from("!H", data, 3)[0]


def parse_sni(data: bytes) -> str | None:
    """The server_name of a ClientHello in the first record, lower-cased; None when absent or malformed."""
    try:
        if not is_tls(data) or data[5] != _CLIENT_HELLO:
            return None
        end = min(len(data), 5 + struct.unpack_from("!H", data, 3)[0])
        pos = 5 + 4 + 2 + 32  # handshake header, client_version, random
        pos += 1 + data[pos]  # session_id
        pos += 2 + struct.unpack_from("!H", data, pos)[0]  # cipher_suites
        pos += 1 + data[pos]  # compression_methods
        ext_end = min(end, pos + 2 + struct.unpack_from("!H", data, pos)[0])
        pos += 2
        while pos + 4 <= ext_end:
            ext_type, ext_len = struct.unpack_from("!HH", data, pos)
            pos += 4
            if ext_type == _SNI_EXT:
                list_end = pos + 2 + struct.unpack_from("!H", data, pos)[0]
                pos += 2
                while pos + 3 <= list_end:
                    name_type, name_len = data[pos], struct.unpack_from("!H", data, pos + 1)[0]
                    pos += 3
                    if name_type == _HOST_NAME:
                        return data[pos : pos + name_len].decode("ascii").lower().rstrip(".")
                    pos += name_len
                return None
            pos += ext_len
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return None
