"""The result model's hash: its fast text builder must give exactly the canonical JSON it stands for."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from backfarm._util.ids import canonical_json
from backfarm.core.results import METRICS, _json_scalar, _rounded_text, result_hash, round_and_hash, round_metric
from tests.results.contract import make_record

EDGES = [
    0.0, -0.0, 1.0, -1.0, 100.0, 1e-4, 9.99999999999e-5, 1e-5, 3.06869792167e-06, 0.1, 1 / 3, 2 / 3,
    123456789012.0, 999999999999.4, 999999999999.6, 1e12, 1e13, 1234567890123456.0, 1e15, 9.99999999999e15, 1e16,
    1e22, 1e300, -1e300, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.5, 1.5e-7, -135.988562241,
]  # fmt: skip


def _values() -> list[float]:
    rng = np.random.default_rng(11)
    mantissa = rng.uniform(-10.0, 10.0, 4000)
    exponent = rng.integers(-30, 30, 4000).astype(float)
    return EDGES + [float(m * 10.0**e) for m, e in zip(mantissa, exponent, strict=True)]


@pytest.mark.parametrize("value", EDGES + [math.nan, math.inf, -math.inf])
def test_rounded_text_is_the_rounded_values_json_or_defers(value: float) -> None:
    text = _rounded_text(value)
    assert text is None or text == _json_scalar(round_metric(value))


def test_rounded_text_matches_the_generic_path_on_thousands_of_values() -> None:
    deferred = 0
    for value in _values():
        text = _rounded_text(value)
        if text is None:
            deferred += 1
            continue
        assert text == _json_scalar(round_metric(value)), value
    assert deferred < 400  # only exponents 12..15 defer (about 4 in 60 of these magnitudes)


def test_the_result_hash_is_the_hash_of_the_canonical_payload() -> None:
    for i, value in enumerate(_values()[:500]):
        metrics = {name: (value * (k + 1) if k % 4 else i) for k, name in enumerate(METRICS)}
        metrics["sharpe"] = None
        record = make_record("job", **metrics)
        payload = {
            "metrics": {k: round_metric(record.metrics.get(k)) for k in METRICS},
            "candles": record.candles_checksum,
            "engine": record.engine_version,
        }
        expected = hashlib.blake2b(canonical_json(payload).encode(), digest_size=16).hexdigest()
        assert record.result_hash == expected, metrics


@hyp_settings(max_examples=400, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.none(),
            st.integers(-(2**62), 2**62),
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, -0.0, 1e12, 1.5e13, 9.99999999999e15, 1e16, 5e-324, 2.2250738585072014e-308]),
        ),
        min_size=len(METRICS),
        max_size=len(METRICS),
    )
)
def test_round_and_hash_is_round_metric_and_result_hash_in_one_pass(values: list[float | int | None]) -> None:
    """The runner's one-pass rounding and hashing gives the values and the hash of the definitions, for every kind
    of value (ints, undefined, non-finite, the exponents where %g and repr spell numbers differently, subnormals)."""
    metrics = dict(zip(METRICS, values, strict=True))
    rounded, digest = round_and_hash(metrics, "c0ffee", "1")
    assert rounded == {m: round_metric(metrics[m]) for m in METRICS}
    assert [type(v) for v in rounded.values()] == [type(round_metric(metrics[m])) for m in METRICS]
    assert digest == result_hash(metrics, "c0ffee", "1")
