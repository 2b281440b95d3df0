from __future__ import annotations

import base64

import pytest

from cxstream.actions.signing import SignatureError, sign, sign_headers, verify

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()


def test_signature_matches_the_standard_webhooks_definition():
    import hashlib
    import hmac

    expected = base64.b64encode(
        hmac.new(b"0123456789abcdef0123", b"msg_1.1700000000.{}", hashlib.sha256).digest()
    ).decode()
    assert sign(SECRET, "msg_1", 1_700_000_000, b"{}") == f"v1,{expected}"


def test_round_trip_and_tampering():
    headers = sign_headers(SECRET, "msg_2", b'{"x":1}', timestamp=1_000)
    verify(SECRET, headers, b'{"x":1}', now=1_010)
    with pytest.raises(SignatureError, match="no matching"):
        verify(SECRET, headers, b'{"x":2}', now=1_010)
    with pytest.raises(SignatureError, match="no matching"):
        verify(SECRET, {**headers, "webhook-id": "msg_3"}, b'{"x":1}', now=1_010)
    with pytest.raises(SignatureError, match="no matching"):
        verify("whsec_" + base64.b64encode(b"other").decode(), headers, b'{"x":1}', now=1_010)


def test_replay_outside_the_tolerance_is_refused():
    headers = sign_headers(SECRET, "msg_4", b"{}", timestamp=1_000)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(SECRET, headers, b"{}", now=1_000 + 301)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(SECRET, headers, b"{}", now=1_000 - 301)


def test_missing_or_malformed_headers():
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, {}, b"{}")
    with pytest.raises(SignatureError, match="integer"):
        verify(
            SECRET,
            {"webhook-id": "a", "webhook-timestamp": "soon", "webhook-signature": "v1,x"},
            b"{}",
        )


def test_any_of_several_signatures_may_match_during_secret_rotation():
    headers = sign_headers(SECRET, "msg_5", b"{}", timestamp=1_000)
    headers["webhook-signature"] = "v1,b2xkLXNpZw== " + headers["webhook-signature"]
    verify(SECRET, headers, b"{}", now=1_000)


def test_the_prefix_and_the_padding_are_optional_as_in_the_reference_libraries():
    key = base64.b64encode(b"0123456789abcdef0123").decode()  # ends in "="
    unpadded = "whsec_" + key.rstrip("=")
    assert key.endswith("=")
    expected = sign(SECRET, "msg_1", 1_700_000_000, b"{}")
    assert sign(unpadded, "msg_1", 1_700_000_000, b"{}") == expected
    assert sign(key, "msg_1", 1_700_000_000, b"{}") == expected  # no prefix: still base64


def test_a_secret_that_is_not_base64_is_a_signature_error_not_a_crash():
    with pytest.raises(SignatureError, match="not base64"):
        sign("whsec_!!!", "msg_1", 1, b"{}")
