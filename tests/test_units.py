"""parse_quantity / format_quantity: decimal SI suffixes, unit words, clear errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_flops import format_quantity, parse_quantity

SCALES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
UNITS = ["", "FLOPs", "flop", "MACs", "mac", "params", "param", "parameters"]

counts = st.integers(min_value=0, max_value=10**18)
suffixes = st.sampled_from(sorted(SCALES))
units = st.sampled_from(UNITS)
spaces = st.sampled_from(["", " ", "  "])


def _random_case(draw, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(text, flips))


@given(counts)
def test_ints_round_trip(n):
    assert parse_quantity(n) == n
    assert parse_quantity(str(n)) == n
    assert parse_quantity(f"{n:_}") == n
    assert parse_quantity(float(n)) == round(float(n))


@given(st.integers(min_value=0, max_value=10**6), suffixes, units, spaces, spaces, st.data())
def test_suffix_scales_integers_in_any_case(n, suffix, unit, sp1, sp2, data):
    text = _random_case(data.draw, f"{n}{sp1}{suffix}{sp2}{unit}")
    assert parse_quantity(text) == n * SCALES[suffix]
    assert parse_quantity(text.upper()) == parse_quantity(text.lower()) == parse_quantity(text)
    assert parse_quantity(f"  {text}\t") == n * SCALES[suffix]


@given(st.integers(min_value=0, max_value=99_999), st.integers(min_value=1, max_value=3), suffixes.filter(bool),
       units, st.data())
def test_decimal_suffixes(mantissa, decimals, suffix, unit, data):
    value = mantissa / 10**decimals
    text = f"{value:.{decimals}f}{suffix}"
    text = _random_case(data.draw, f"{text} {unit}" if unit else text)
    assert parse_quantity(text) == round(value * SCALES[suffix])


@given(counts, units, st.integers(min_value=0, max_value=6))
def test_format_then_parse_is_close(n, unit, precision):
    text = format_quantity(n, unit, precision)
    back = parse_quantity(text)
    assert abs(back - n) <= max(1, n * 10**-precision)
    if unit:
        assert text.endswith(unit)


@given(counts)
def test_format_uses_largest_suffix_keeping_a_number_at_least_one(n):
    text = format_quantity(n)
    if n < 1000:
        assert text == str(n)
    else:
        number, suffix = text[:-1], text[-1]
        assert suffix in "KMGTP"
        assert 1 <= float(number) < 1000 or suffix == "P"


BAD_ALPHABET = "!@#$%&*(),;:/?~xyzqwjbhuvXYZQWJBHUV"


@given(st.text(alphabet=BAD_ALPHABET, min_size=1, max_size=6), st.sampled_from(["", "1", "4.1", "4.1G", "8 "]),
       st.booleans())
def test_garbage_is_rejected_with_the_text_and_the_accepted_forms(junk, number, junk_first):
    text = junk + number if junk_first else number + junk
    with pytest.raises(ValueError) as info:
        parse_quantity(text)
    message = str(info.value)
    assert repr(text) in message
    assert "expected" in message
    assert "4.1G" in message  # the accepted forms are shown


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1_000", 1000),
        ("8.2 GFLOPs", 8_200_000_000),
        ("25.6M params", 25_600_000),
        ("4.1G", 4_100_000_000),
        ("4.1g", 4_100_000_000),
        ("4100000000", 4_100_000_000),
        ("11.174 GMACs", 11_174_000_000),
        ("2T", 2 * 10**12),
        ("1.5P", 15 * 10**14),
        ("512", 512),
        ("0", 0),
        ("0.5K", 500),
        (".5k", 500),
        ("1e3", 1000),
        ("3 flops", 3),
        ("7 parameters", 7),
        ("+5M", 5_000_000),
        (25_600_000, 25_600_000),
        (4.1e9, 4_100_000_000),
        (0, 0),
    ],
)
def test_accepted_examples(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "bad",
    ["4.1Q", "", "   ", "-1", "-1G", "G", "GFLOPs", "4.1 GB", "1,000", "4..1G", "1_", "_1", "4.1 G G", "0x10",
     "nan", "inf", "1e999", True, False, float("nan"), float("inf"), float("-inf"), -1, -0.5, None, [1], b"1G"],
)
def test_rejected_examples(bad):
    with pytest.raises(ValueError) as info:
        parse_quantity(bad)
    assert repr(bad) in str(info.value)
    assert "expected" in str(info.value)


@pytest.mark.parametrize(
    "n,unit,expected",
    [
        (9_410_000_000, "FLOPs", "9.41 GFLOPs"),
        (512, "", "512"),
        (512, "FLOPs", "512 FLOPs"),
        (0, "", "0"),
        (1500, "", "1.50K"),
        (25_557_032, "params", "25.56 Mparams"),
        (4_089_184_256, "MACs", "4.09 GMACs"),
        (10**18, "", "1000.00P"),
        (-2_000_000, "", "-2.00M"),
        (2.5, "", "2.5"),
    ],
)
def test_format_examples(n, unit, expected):
    assert format_quantity(n, unit) == expected


def test_format_precision():
    assert format_quantity(11_173_625_856, "MACs", precision=3) == "11.174 GMACs"
    assert format_quantity(1234, precision=0) == "1K"
    assert math.isclose(parse_quantity(format_quantity(17_563_828_224, precision=4)), 17_564_000_000, rel_tol=1e-4)
