"""KeyRing validation and subkeys; known-answer vectors for the envelope format."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from ponykit.errors import ConfigurationError
from ponykit.security import KeyRing
from ponykit.security.envelope import EnvelopeError, blind_index, key_id_of, open_envelope, seal

MASTER = bytes(range(32))
RING = KeyRing({"k1": MASTER})

# Known answers for master key 00..1f, key id "k1", context "User.email", plaintext "hello world",
# nonce 00 * 12. Pinned here so any change to the format or the derivation is caught.
AEAD_SUBKEY = "0b94d67b06bf425e777e86fd4df9b9e918ffcf9f73f9ff9d984a22f279db9f6b"
INDEX_SUBKEY = "1542ed9a384ff6b35722145bbc7c1e144fa7bbd8903c4afb369226010d3dede7"
CURSOR_SUBKEY = "a8bb1faab412f6f2bdc9336976ac4738aa70997ed3f9c03a79a26a3da6b00e41"
PLAIN_ENVELOPE = "v1:k1:AAAAAAAAAAAAAAAAA0R2jvyZa1u7l1JSWwqVbpDC4qnr+qnXkOaK"
SEARCHABLE_ENVELOPE = (
    "v1:k1:a8eb5e97756823039dbe20c66ebe2846:AAAAAAAAAAAAAAAAA0R2jvyZa1u7l1IRKbaMnmtffCvelN48oAN/"
)


def hkdf(purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"ponykit-keyring-v1",
        info=b"ponykit/v1/" + purpose.encode(),
    ).derive(MASTER)


def test_subkeys_match_hkdf_spec() -> None:
    """Subkeys are HKDF-SHA256(master, salt, info=ponykit/v1/<purpose>) and differ per purpose."""
    assert RING.subkey("aead").hex() == AEAD_SUBKEY == hkdf("aead").hex()
    assert RING.subkey("blind-index").hex() == INDEX_SUBKEY == hkdf("blind-index").hex()
    assert RING.subkey("cursor", "k1").hex() == CURSOR_SUBKEY
    assert len({AEAD_SUBKEY, INDEX_SUBKEY, CURSOR_SUBKEY, MASTER.hex()}) == 4


def test_envelope_known_answers() -> None:
    """The envelope text equals the documented construction, computed independently with cryptography."""
    nonce = bytes(12)
    assert seal(RING, b"hello world", b"User.email", nonce=nonce) == PLAIN_ENVELOPE
    header = "v1:k1:"
    expected_ct = AESGCM(hkdf("aead")).encrypt(nonce, b"hello world", header.encode() + b"\x00User.email")
    assert header + base64.b64encode(nonce + expected_ct).decode() == PLAIN_ENVELOPE

    index = hmac.new(hkdf("blind-index"), b"User.email\x00hello world", hashlib.sha256).digest()[:16].hex()
    assert blind_index(RING, "k1", b"hello world", b"User.email") == index
    assert seal(RING, b"hello world", b"User.email", nonce=nonce, searchable=True) == SEARCHABLE_ENVELOPE
    header = f"v1:k1:{index}:"
    expected_ct = AESGCM(hkdf("aead")).encrypt(nonce, b"hello world", header.encode() + b"\x00User.email")
    assert header + base64.b64encode(nonce + expected_ct).decode() == SEARCHABLE_ENVELOPE

    assert open_envelope(RING, PLAIN_ENVELOPE, b"User.email") == b"hello world"
    assert open_envelope(RING, SEARCHABLE_ENVELOPE, b"User.email") == b"hello world"
    assert key_id_of(SEARCHABLE_ENVELOPE) == "k1"


def test_fresh_nonce_per_value() -> None:
    """Encrypting the same value twice gives different envelopes (random nonces), same blind index."""
    a = seal(RING, b"same", b"c", searchable=True)
    b = seal(RING, b"same", b"c", searchable=True)
    assert a != b
    assert a.split(":")[2] == b.split(":")[2]


@pytest.mark.parametrize(
    ("stored", "context", "reason"),
    [
        (PLAIN_ENVELOPE, b"User.other", "authentication failed"),
        (PLAIN_ENVELOPE.replace("v1:k1:", "v1:k9:"), b"User.email", "not in the key ring"),
        (PLAIN_ENVELOPE[:30], b"User.email", "truncated"),
        ("v2:k1:AAAA", b"User.email", "not a ponykit v1 envelope"),
        ("v1:k1:a:b:c", b"User.email", "malformed envelope"),
        ("v1:k1:!!!!", b"User.email", "malformed envelope body"),
    ],
)
def test_open_failures(stored: str, context: bytes, reason: str) -> None:
    """Foreign, truncated and malformed envelopes fail with a data-free reason."""
    with pytest.raises(EnvelopeError, match=reason) as info:
        open_envelope(RING, stored, context)
    assert "hello" not in str(info.value)


def test_key_ring_validation_messages() -> None:
    """Keys and key ids are validated at construction with exact messages that show no key material."""
    with pytest.raises(ConfigurationError, match=r"^key 'k1' is 5 bytes long; ponykit keys are exactly 32"):
        KeyRing({"k1": b"short"})
    with pytest.raises(ConfigurationError, match=r"^key 'k1' is not valid base64"):
        KeyRing({"k1": "not base64 at all!!"})
    with pytest.raises(ConfigurationError, match=r"^invalid key id 'K1': key ids are 1-32 characters"):
        KeyRing({"K1": MASTER})
    with pytest.raises(ConfigurationError, match=r"^primary key id 'k2' is not in the key ring"):
        KeyRing({"k1": MASTER}, primary="k2")
    with pytest.raises(ConfigurationError, match="needs at least one key"):
        KeyRing({})
    with pytest.raises(ConfigurationError, match="same key material"):
        KeyRing({"a": MASTER, "b": MASTER})


def test_generate_from_mapping_and_env() -> None:
    """generate_key makes distinct 32-byte keys; from_env parses 'id:key,...' with the first as primary."""
    k1, k2 = KeyRing.generate_key(), KeyRing.generate_key()
    assert k1 != k2
    assert len(base64.urlsafe_b64decode(k1)) == 32
    ring = KeyRing.from_env("KEYS", environ={"KEYS": f"new:{k2}, old:{k1}"})
    assert ring.primary == "new"
    assert ring.key_ids == ("new", "old")
    assert KeyRing.from_mapping({"a": k1, "b": k2}, primary="b").primary == "b"
    assert ring.with_primary("old").primary == "old"
    with pytest.raises(ConfigurationError, match="environment variable KEYS is not set"):
        KeyRing.from_env("KEYS", environ={})
    with pytest.raises(ConfigurationError, match="entry 1 is not of the form id:base64key"):
        KeyRing.from_env("KEYS", environ={"KEYS": k1})
    with pytest.raises(ConfigurationError, match="key id 'a' appears twice"):
        KeyRing.from_env("KEYS", environ={"KEYS": f"a:{k1},a:{k2}"})


def test_no_key_material_in_repr_or_pickle() -> None:
    """The repr shows key ids only, and a KeyRing refuses to be pickled."""
    key = KeyRing.generate_key()
    ring = KeyRing({"k1": key})
    assert repr(ring) == "KeyRing(primary='k1', key_ids=['k1'])"
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(ring)
    with pytest.raises(KeyError):
        ring.subkey("aead", "nope")


def non_canonical_spellings(stored: str) -> list[str]:
    """Every other spelling of an envelope's body that a lenient base64 decoder maps to the same bytes."""
    header, _, body = stored.rpartition(":")
    stripped = body.rstrip("=")
    pad = len(body) - len(stripped)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(stripped[-1])
    spare = (1 << (2 * pad)) - 1  # 2 spare bits before "=", 4 before "=="
    return [
        f"{header}:{stripped[:-1]}{alphabet[(last & ~spare) | bits]}{'=' * pad}"
        for bits in range(1, spare + 1)
    ]


def _text_opener(codec: Any, keys: KeyRing, on_error: Any) -> Any:
    """What EncryptedStr's converter does with a loaded value: ``codec.open``, then UTF-8 text; None stays
    None and an EnvelopeError becomes ``on_error(reason)``."""

    def open_text(stored: Any) -> str | None:
        if stored is None:
            return None
        try:
            return codec.open(keys, stored).decode("utf-8", "surrogatepass")  # type: ignore[no-any-return]
        except EnvelopeError as exc:
            raise on_error(str(exc)) from None

    return open_text


@pytest.mark.parametrize("plaintext", [b"hello world!", b"hello world!!"])
@pytest.mark.parametrize("searchable", [False, True])
def test_non_canonical_base64_is_refused(plaintext: bytes, searchable: bool) -> None:
    """Setting a spare bit of the last base64 character gives another string for the same bytes: refused."""
    from ponykit.security.envelope import EnvelopeCodec

    stored = seal(RING, plaintext, b"User.email", searchable=searchable)
    spellings = non_canonical_spellings(stored)
    assert len(spellings) in (3, 15) and stored.endswith("=")
    codec = EnvelopeCodec(b"User.email", searchable=searchable)
    open_text = _text_opener(codec, RING, lambda r: ValueError(r))
    for _ in range(2):  # the second round takes the codec's cached-header fast paths
        assert open_envelope(RING, stored, b"User.email") == plaintext
        assert codec.open(RING, stored) == plaintext
        assert open_text(stored) == plaintext.decode()
        for bad in spellings:
            assert base64.b64decode(bad.rpartition(":")[2]) == base64.b64decode(stored.rpartition(":")[2])
            with pytest.raises(EnvelopeError, match="malformed envelope body"):
                open_envelope(RING, bad, b"User.email")
            with pytest.raises(EnvelopeError):
                codec.open(RING, bad)
            with pytest.raises(ValueError, match="authentication failed|malformed"):
                open_text(bad)


@pytest.mark.parametrize(
    ("material", "reason"),
    [
        (b"\x00" * 32, "fewer than 16 distinct byte values"),
        (b"\xff" * 32, "fewer than 16 distinct byte values"),
        (b"password" * 4, "fewer than 16 distinct byte values"),
        ("A" * 43, "fewer than 16 distinct byte values"),
        (base64.b64encode(b"\x00" * 32).decode(), "fewer than 16 distinct byte values"),
        (b"0123456789abcdef" * 2, "repeats a pattern of 16 bytes"),
        (bytes(range(17)) + bytes(range(15)), "repeats a pattern of 17 bytes"),
    ],
)
def test_degenerate_keys_are_refused(material: str | bytes, reason: str) -> None:
    """Blank, placeholder and short-pattern keys are refused with a message that shows no key material."""
    if reason.endswith("17 bytes"):  # a period over 16 is what random keys may have: accepted
        KeyRing({"k1": material})
        return
    with pytest.raises(ConfigurationError, match="^key 'k1' is not random: it (has|repeats) ") as info:
        KeyRing({"k1": material})
    assert reason in str(info.value)
    shown = material.decode("latin-1") if isinstance(material, bytes) else material
    assert shown[:8] not in str(info.value)


def test_key_text_with_junk_is_refused() -> None:
    """Key text is strict, canonical base64 (padding optional): junk, typos and spare bits are refused."""
    key = KeyRing.generate_key()
    raw = base64.urlsafe_b64decode(key)
    for good in (key, key.rstrip("="), base64.b64encode(raw).decode(), f"  {key}\n"):
        assert KeyRing({"k1": good}).subkey("aead") == KeyRing({"k1": raw}).subkey("aead")
    body = key.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spare_bit = alphabet[alphabet.index(body[-1]) ^ 1]  # 32 bytes: the last character has 2 spare bits
    spaced = key[:20] + " " + key[20:]
    for bad in (key + "!!!", key + "A", key + "==", "!" + key, body[:-1] + spare_bit, spaced):
        with pytest.raises(ConfigurationError, match="^key 'k1' is not valid base64") as info:
            KeyRing({"k1": bad})
        assert body[:8] not in str(info.value)
    with pytest.raises(ConfigurationError, match="^key 'k1' is not valid base64"):
        KeyRing({"k1": key.replace("-", "+").replace("_", "/") + "_" if "-" in key else key + "+/"})


def test_generated_keys_are_always_accepted() -> None:
    """KeyRing.generate_key() output is always accepted, as text and as bytes (os.urandom drives it, so
    this samples it rather than using hypothesis, whose byte strategies favour degenerate values)."""
    for _ in range(2000):
        key = KeyRing.generate_key()
        KeyRing({"k1": key, "k2": base64.urlsafe_b64decode(key)[::-1]})


def test_codec_searchable_fast_path_matches_the_format() -> None:
    """EnvelopeCodec's cached searchable seal/open produce and accept exactly seal()/open_envelope()'s
    format: same blind index, and each opens the other's envelopes; a foreign key id still fails."""
    from ponykit.security.envelope import EnvelopeCodec

    ring = KeyRing({"k1": MASTER, "k2": bytes(range(100, 132))}, primary="k2")
    codec = EnvelopeCodec(b"User.email", searchable=True)
    for plaintext in (b"", b"hello world", "é".encode() * 50):
        fast = codec.seal(ring, plaintext)
        slow = seal(ring, plaintext, b"User.email", searchable=True)
        assert fast.split(":")[:3] == slow.split(":")[:3]
        assert fast.split(":")[2] == blind_index(ring, "k2", plaintext, b"User.email")
        assert open_envelope(ring, fast, b"User.email") == plaintext
        assert codec.open(ring, slow) == plaintext == codec.open(ring, fast)
        old = seal(ring, plaintext, b"User.email", searchable=True, key_id="k1")
        assert codec.open(ring, old) == plaintext
        with pytest.raises(EnvelopeError, match="not in the key ring"):
            codec.open(ring, old.replace("v1:k1:", "v1:k9:"))
        with pytest.raises(EnvelopeError, match="authentication failed"):
            codec.open(ring, old.replace("v1:k1:", "v1:k2:"))


@given(
    plaintext=st.binary(max_size=300),
    context=st.binary(min_size=1, max_size=40),
    key_id=st.sampled_from(["k1", "k2"]),
)
def test_codec_blind_index_matches_blind_index(plaintext: bytes, context: bytes, key_id: str) -> None:
    """The codec's cached-state HMAC (used by lookups) equals blind_index() for every key id and context;
    a new ring whose key id names another key is picked up at once (the states are cached per ring)."""
    from ponykit.security.envelope import EnvelopeCodec

    codec = EnvelopeCodec(context, searchable=True)
    ring = KeyRing({"k1": MASTER, "k2": bytes(range(100, 132))})
    other = KeyRing({"k1": bytes(range(50, 82)), "k2": MASTER})
    for keys in (ring, ring, other, ring):
        assert codec.blind_index(keys, key_id, plaintext) == blind_index(keys, key_id, plaintext, context)


def test_codec_text_open_of_searchable_envelopes() -> None:
    """EnvelopeCodec.open (what EncryptedStr's converter calls) opens searchable envelopes of every key of
    the ring straight through the per-key-id path, and reports tampering, unknown key ids and non-envelopes
    without data."""
    from ponykit.security.envelope import EnvelopeCodec

    ring = KeyRing({"k1": MASTER, "k2": bytes(range(100, 132))}, primary="k2")
    codec = EnvelopeCodec(b"User.email", searchable=True)
    holder = type("Holder", (), {"keys": ring})()
    errors: list[str] = []

    def on_error(reason: str, obj: Any = None) -> Exception:
        errors.append(reason)
        return ValueError(reason)

    open_text = _text_opener(codec, holder.keys, on_error)
    for key_id in ("k1", "k2"):
        stored = seal(ring, "sécret".encode(), b"User.email", searchable=True, key_id=key_id)
        assert open_text(stored) == "sécret"
        assert open_text(stored) == "sécret"  # the key id's cipher is cached now
        tampered = stored[:-3] + ("A" if stored[-3] != "A" else "B") + stored[-2:]
        with pytest.raises(ValueError, match="authentication failed|malformed"):
            open_text(tampered)
    with pytest.raises(ValueError, match="not in the key ring"):
        open_text(stored.replace("v1:k2:", "v1:k9:"))
    with pytest.raises(ValueError, match="not a ponykit v1 envelope"):
        open_text(b"v1:k1:xx")
    assert open_text(None) is None
    assert all("sécret" not in e for e in errors)
