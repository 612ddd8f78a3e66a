"""API key format: random, checksummed, refused when malformed."""

import pytest

from shared.apikeys import KEY_LENGTH, PREFIX, display_prefix, generate, is_well_formed, key_hash


def test_generated_keys_are_well_formed_and_unique() -> None:
    keys = {generate() for _ in range(500)}
    assert len(keys) == 500
    for key in keys:
        assert key.startswith(PREFIX)
        assert len(key) == KEY_LENGTH
        assert len(key) - len(PREFIX) >= 32
        assert is_well_formed(key)


def test_any_single_character_change_is_caught() -> None:
    key = generate()
    for i in range(len(PREFIX), len(key)):
        replacement = "A" if key[i] != "A" else "B"
        assert not is_well_formed(key[:i] + replacement + key[i + 1 :])


@pytest.mark.parametrize(
    "key", ["", "rk_live_", "rk_test_" + "a" * 38, "rk_live_" + "a" * 37, "rk_live_" + "!" * 38, "Bearer x"]
)
def test_malformed_keys(key: str) -> None:
    assert not is_well_formed(key)


def test_hash_and_prefix() -> None:
    key = generate()
    assert key_hash(key) != key
    assert len(key_hash(key)) == 64
    assert key.startswith(display_prefix(key))
    assert len(display_prefix(key)) < len(key) - 30
