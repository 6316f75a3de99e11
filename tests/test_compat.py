"""Compatibility checks against environment profiles, the policy, and the table."""

from __future__ import annotations

import json
import warnings

import pytest
import sklearn

from modelload import CompatibilityError
from modelload.compat import EnvironmentProfile, check, enforce, render_table
from modelload.manifest import Requirements


def profile(name: str, python: str = "3.11.7", **dists: str) -> EnvironmentProfile:
    return EnvironmentProfile(
        name=name,
        python_version=python,
        markers={"sys_platform": "linux", "platform_machine": "x86_64"},
        distributions={k.replace("_", "-"): v for k, v in dists.items()},
    )


def test_current_profile_sees_installed_distributions() -> None:
    p = EnvironmentProfile.current()
    assert p.distributions["scikit-learn"] == sklearn.__version__
    round_trip = EnvironmentProfile.from_dict(json.loads(p.to_json()), "x.json")
    assert round_trip.distributions == p.distributions
    assert round_trip.python_version == p.python_version


def test_failures_list_every_unmet_requirement_with_found_version() -> None:
    req = Requirements(
        python=">=3.12",
        packages=("scikit-learn==0.1", "numpy>=2", "torch>=2", "pandas; python_version<'3'"),
    )
    report = check(req, profile("img", numpy="2.1.0", scikit_learn="1.9.1"))
    assert not report.ok
    assert [str(f) for f in report.failures] == [
        "python>=3.12 (found 3.11.7)",
        "scikit-learn==0.1 (found 1.9.1)",
        "torch>=2 (not installed)",
    ]
    assert report.skipped == ("pandas; python_version<'3'",)


def test_marker_uses_the_profile_python_not_ours() -> None:
    req = Requirements(packages=("tomli>=2; python_version<'3.11'",))
    assert check(req, profile("old", python="3.10.4")).failures[0].requirement.startswith("tomli")
    assert check(req, profile("new", python="3.12.1")).ok


def test_policy_error_warn_ignore() -> None:
    report = check(Requirements(packages=("scikit-learn==0.1",)), profile("img", scikit_learn="1"))
    with pytest.raises(CompatibilityError) as info:
        enforce(report, "error", "iris:1")
    assert "scikit-learn==0.1 (found 1)" in str(info.value)
    assert "MODELLOAD_COMPAT=warn" in str(info.value)
    with pytest.warns(RuntimeWarning, match="scikit-learn==0.1"):
        enforce(report, "warn", "iris:1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enforce(report, "ignore", "iris:1")


def test_table_formats() -> None:
    good = profile("good", scikit_learn="1.9.1")
    bad = profile("bad", scikit_learn="1.0")
    req = Requirements(packages=("scikit-learn==1.9.1",))
    rows = [("iris:1", [check(req, good), check(req, bad)])]
    text = render_table(rows, ["good", "bad"])
    header, rule, row = text.splitlines()
    assert header.split() == ["model", "good", "bad"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert row.split(None, 2) == ["iris:1", "ok", "scikit-learn==1.9.1 (found 1.0)"]
    md = render_table(rows, ["good", "bad"], "markdown")
    assert md.splitlines()[2] == "| iris:1 | ok | scikit-learn==1.9.1 (found 1.0) |"
    doc = json.loads(render_table(rows, ["good", "bad"], "json"))
    assert doc["ok"] is False
    assert doc["models"][0]["results"]["good"]["ok"] is True
