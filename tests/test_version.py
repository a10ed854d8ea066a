import backfarm


def test_version_is_semver() -> None:
    parts = backfarm.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)
