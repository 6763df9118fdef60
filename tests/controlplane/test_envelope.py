"""Envelope encryption: AES-256-GCM data keys wrapped by the KEK; tamper-evident; KEK rotation."""

from __future__ import annotations

import base64
import os

import pytest

from controlplane.envelope import Envelope, EnvelopeError, load_kek
from controlplane.errors import KekUnavailable, StartupError


def test_seal_then_open_roundtrips_and_hides_the_plaintext():
    env = Envelope.from_keys(os.urandom(32))
    blob = env.seal(b"top secret", aad=b"row-1")
    assert b"top secret" not in blob
    assert env.open(blob, aad=b"row-1") == b"top secret"
    assert env.seal(b"top secret", aad=b"row-1") != blob  # fresh data key and nonce each time


@pytest.mark.parametrize(
    "mutate", [lambda b: b[:-1] + bytes([b[-1] ^ 1]), lambda b: b[:30] + bytes([b[30] ^ 1]) + b[31:]]
)
def test_tampered_blob_or_wrong_aad_fails(mutate):
    env = Envelope.from_keys(os.urandom(32))
    blob = env.seal(b"v", aad=b"a")
    with pytest.raises(EnvelopeError):
        env.open(mutate(blob), aad=b"a")
    with pytest.raises(EnvelopeError):
        env.open(blob, aad=b"b")
    with pytest.raises(EnvelopeError):
        env.open(b"garbage")


def test_kek_rotation_opens_old_blobs_and_rewraps():
    old, new = os.urandom(32), os.urandom(32)
    blob = Envelope.from_keys(old).seal(b"v")
    rotated = Envelope.from_keys(new, (old,))
    assert rotated.open(blob) == b"v"
    rewrapped = rotated.rewrap(blob)
    assert Envelope.from_keys(new).open(rewrapped) == b"v"
    assert not Envelope.from_keys(old).can_open(rewrapped)
    with pytest.raises(EnvelopeError):
        Envelope.from_keys(new).open(blob)


def test_without_kek_seal_and_open_are_kek_unavailable():
    env = Envelope.from_keys(None)
    with pytest.raises(KekUnavailable):
        env.seal(b"v")
    with pytest.raises(KekUnavailable):
        env.open(Envelope.from_keys(os.urandom(32)).seal(b"v"))


def test_kek_file_may_hold_raw_or_base64_bytes(tmp_path):
    kek = os.urandom(32)
    raw, b64, bad = tmp_path / "raw", tmp_path / "b64", tmp_path / "bad"
    raw.write_bytes(kek)
    b64.write_text(base64.b64encode(kek).decode() + "\n")
    bad.write_text("short")
    assert load_kek(path=raw) == kek and load_kek(path=b64) == kek
    with pytest.raises(StartupError):
        load_kek(path=bad)
    with pytest.raises(StartupError, match="cannot read"):
        load_kek(path=tmp_path / "missing")
