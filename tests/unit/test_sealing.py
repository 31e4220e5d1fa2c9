"""Sealing of activation and one-time codes that travel on the bus (S2, S7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.sealing import SealedSecret, Sealer, SealingError, _b64d, _b64e, generate_key, parse_keyring

CONTEXT = "dk.adgang.identity.CredentialsIssued.v1:6f1c1a52-55f4-4b39-9a8e-0d8f0f3c2b71"
CODE = "7Q4K-93XZ-ABCD-EFGH-JKMN"


def sealer_with(*kids: str, active: str | None = None) -> tuple[Sealer, dict[str, bytes]]:
    ring = parse_keyring(",".join(f"{kid}:{generate_key()}" for kid in kids))
    return Sealer(ring, active or kids[0]), ring


@pytest.fixture
def sealer() -> Sealer:
    return sealer_with("k1")[0]


def test_a_sealed_value_unseals_to_the_original_in_the_same_context(sealer: Sealer) -> None:
    """S2: the activation code reaches the notifier intact."""
    sealed = sealer.seal(CODE, context=CONTEXT)

    assert sealer.unseal(sealed, context=CONTEXT) == CODE


def test_sealing_the_same_value_twice_gives_different_nonces_and_ciphertexts(sealer: Sealer) -> None:
    first = sealer.seal(CODE, context=CONTEXT)
    second = sealer.seal(CODE, context=CONTEXT)

    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


def test_the_sealed_value_never_contains_the_plaintext(sealer: Sealer) -> None:
    """S2: only the company's e-Boks may see the code, not every reader of the topic."""
    sealed = sealer.seal(CODE, context=CONTEXT)
    serialised = sealed.model_dump_json()

    assert CODE not in serialised
    assert CODE.replace("-", "") not in serialised
    assert CODE not in repr(sealed)


def test_a_sealed_value_does_not_open_in_another_context(sealer: Sealer) -> None:
    """A ciphertext copied into another user's event must not open there."""
    sealed = sealer.seal(CODE, context=CONTEXT)

    with pytest.raises(SealingError, match="failed authentication"):
        sealer.unseal(sealed, context=CONTEXT.replace("6f1c", "0000"))


def test_a_tampered_ciphertext_is_refused(sealer: Sealer) -> None:
    sealed = sealer.seal(CODE, context=CONTEXT)
    raw = bytearray(_b64d(sealed.ciphertext))
    raw[0] ^= 0x01
    tampered = sealed.model_copy(update={"ciphertext": _b64e(bytes(raw))})

    with pytest.raises(SealingError, match="failed authentication"):
        sealer.unseal(tampered, context=CONTEXT)


def test_a_tampered_nonce_is_refused(sealer: Sealer) -> None:
    sealed = sealer.seal(CODE, context=CONTEXT)
    raw = bytearray(_b64d(sealed.nonce))
    raw[-1] ^= 0x80
    tampered = sealed.model_copy(update={"nonce": _b64e(bytes(raw))})

    with pytest.raises(SealingError):
        sealer.unseal(tampered, context=CONTEXT)


def test_a_value_sealed_with_an_unknown_key_id_is_refused_naming_the_key(sealer: Sealer) -> None:
    sealed = sealer.seal(CODE, context=CONTEXT)
    foreign = sealed.model_copy(update={"kid": "k9"})

    with pytest.raises(SealingError, match="unknown key 'k9'"):
        sealer.unseal(foreign, context=CONTEXT)


def test_a_value_sealed_by_another_key_ring_does_not_open_even_under_the_same_key_id() -> None:
    ours, _ = sealer_with("k1")
    theirs, _ = sealer_with("k1")

    with pytest.raises(SealingError):
        ours.unseal(theirs.seal(CODE, context=CONTEXT), context=CONTEXT)


def test_after_rotation_old_values_still_unseal_and_new_values_carry_the_new_key_id() -> None:
    old_sealer, old_ring = sealer_with("2025")
    sealed_before_rotation = old_sealer.seal(CODE, context=CONTEXT)
    new_key = parse_keyring(f"2026:{generate_key()}")
    rotated = Sealer({**old_ring, **new_key}, "2026")

    sealed_after_rotation = rotated.seal(CODE, context=CONTEXT)

    assert rotated.unseal(sealed_before_rotation, context=CONTEXT) == CODE
    assert sealed_before_rotation.kid == "2025"
    assert sealed_after_rotation.kid == "2026"
    assert rotated.active_kid == "2026"
    with pytest.raises(SealingError, match="unknown key '2026'"):
        old_sealer.unseal(sealed_after_rotation, context=CONTEXT)


def test_a_sealer_refuses_an_active_key_that_is_not_in_the_ring() -> None:
    ring = parse_keyring(f"k1:{generate_key()}")

    with pytest.raises(SealingError, match="'k2' is not in the key ring"):
        Sealer(ring, "k2")


def test_parse_keyring_reads_several_entries_and_ignores_blanks_around_commas() -> None:
    k1, k2 = generate_key(), generate_key()

    ring = parse_keyring(f" k1:{k1} , ,k2.b-c_d:{k2} ")

    assert set(ring) == {"k1", "k2.b-c_d"}
    assert all(len(key) == 32 for key in ring.values())
    assert ring["k1"] != ring["k2.b-c_d"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("k1-without-colon", "must be 'kid:base64key'", id="no colon"),
        pytest.param(f"bad kid:{generate_key()}", "entry 1: key id must be 1-64", id="space in kid"),
        pytest.param(f":{generate_key()}", "entry 1: key id must be 1-64", id="empty kid"),
        pytest.param(f"{'k' * 65}:{generate_key()}", "entry 1: key id must be 1-64", id="kid too long"),
        pytest.param(f"k1:{generate_key()},k1:{generate_key()}", "'k1' appears twice", id="repeated kid"),
        pytest.param("k1:!!!" + generate_key(), "'k1' is not base64url", id="foreign characters"),
        pytest.param("k1:" + _b64e(b"\0" * 16), "'k1' must be 32 bytes, is 16", id="128-bit key"),
        pytest.param("k1:" + _b64e(b"\0" * 33), "'k1' must be 32 bytes, is 33", id="33-byte key"),
        pytest.param("k1:abcde", "'k1' is not base64", id="not base64"),
        pytest.param("", "no sealing keys configured", id="empty"),
        pytest.param(" , ", "no sealing keys configured", id="only commas"),
    ],
)
def test_parse_keyring_refuses_a_bad_entry_with_a_clear_message(spec: str, message: str) -> None:
    with pytest.raises(SealingError, match=message):
        parse_keyring(spec)


def test_a_key_given_without_its_key_id_is_not_repeated_in_the_error() -> None:
    key = generate_key()

    with pytest.raises(SealingError) as caught:
        parse_keyring(key)

    assert key not in str(caught.value)


def test_a_sealed_secret_refuses_unknown_fields_and_algorithms() -> None:
    with pytest.raises(ValueError):
        SealedSecret.model_validate({"kid": "k1", "alg": "none", "nonce": "", "ciphertext": ""})
    with pytest.raises(ValueError):
        SealedSecret.model_validate({"kid": "k1", "nonce": "", "ciphertext": "", "plaintext": CODE})


_SHARED_SEALER = sealer_with("prop")[0]


@given(plaintext=st.text(), context=st.text(max_size=80))
def test_any_text_survives_a_seal_and_unseal_round_trip(plaintext: str, context: str) -> None:
    sealed = _SHARED_SEALER.seal(plaintext, context=context)

    assert _SHARED_SEALER.unseal(sealed, context=context) == plaintext
    with pytest.raises(SealingError):
        _SHARED_SEALER.unseal(sealed, context=context + "x")


def test_a_digest_matches_its_code_only_in_its_context_and_under_its_key_ring() -> None:
    """Short codes (six digits) are stored as keyed digests: without the key ring a stolen
    digest cannot be matched by trying all million codes."""
    sealer, _ = sealer_with("k1")
    digest = sealer.digest("482913", context="activation:a1:sms")

    assert "482913" not in digest and digest.startswith("k1$")
    assert sealer.digest_matches("482913", digest, context="activation:a1:sms")
    assert not sealer.digest_matches("482914", digest, context="activation:a1:sms")
    assert not sealer.digest_matches("482913", digest, context="activation:a2:sms")
    assert not sealer_with("k1")[0].digest_matches("482913", digest, context="activation:a1:sms")
    assert not sealer.digest_matches("482913", "k9$" + digest[3:], context="activation:a1:sms")


def test_after_rotation_old_digests_still_match_and_new_ones_name_the_new_key() -> None:
    old, ring = sealer_with("k1")
    digest = old.digest("482913", context="c")
    rotated = Sealer({**ring, **parse_keyring(f"k2:{generate_key()}")}, "k2")

    assert rotated.digest_matches("482913", digest, context="c")
    assert rotated.digest("482913", context="c").startswith("k2$")
