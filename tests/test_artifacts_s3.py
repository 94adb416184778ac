"""Artifact store on a real S3 server (SeaweedFS started by the tests) and on a local directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.artifacts import LocalArtifactStore, S3ArtifactStore
from shared.errors import ArtifactError, NotFoundError
from tests.fixtures_s3 import S3Server, s3_server  # noqa: F401  (session fixture)

pytestmark = pytest.mark.s3


def _meta(version: str, mape: float) -> dict:
    return {"trained_at": f"2023-01-0{version[-1]}T00:00:00+00:00", "training_window": ["2019", "2023"],
            "data_fingerprint": "abc", "library_versions": {"neuralprophet": "0.9.0"},
            "backtest_metrics": {"holdout": {"mape": mape}}}


@pytest.fixture
def s3_store(s3_server: S3Server, request: pytest.FixtureRequest) -> S3ArtifactStore:  # noqa: F811
    bucket = "t-" + request.node.name.replace("_", "-").lower()[:40]
    return S3ArtifactStore(s3_server.endpoint_url, bucket, "us-east-1", s3_server.access_key, s3_server.secret_key)


def test_round_trip_on_seaweedfs(s3_store: S3ArtifactStore) -> None:
    files = {"model.json": b'{"a": 1}', "profile.pt": bytes(range(256)) * 100}
    s3_store.save_version("load", "v1", files, _meta("v1", 3.0))
    s3_store.set_current("load", "v1")
    assert s3_store.get_files("load", "v1") == files
    cur = s3_store.current("load")
    assert cur is not None and cur["version"] == "v1" and cur["backtest_metrics"]["holdout"]["mape"] == 3.0
    assert [m["version"] for m in s3_store.list_models("load")] == ["v1"]


def test_list_models_flags_current_and_keeps_rejected(s3_store: S3ArtifactStore) -> None:
    for v, mape in (("v1", 3.0), ("v2", 2.5), ("v3", 4.0)):
        s3_store.save_version("load", v, {"model.json": b"{}"}, {**_meta(v, mape), "decision": "promoted"})
    s3_store.set_current("load", "v2")
    s3_store.update_meta("load", "v3", decision="rejected", decision_reason="worse on holdout")
    listed = {m["version"]: m for m in s3_store.list_models("load")}
    assert [v for v, m in listed.items() if m["current"]] == ["v2"]
    assert listed["v3"]["decision_reason"] == "worse on holdout"


def test_no_model_means_none(s3_store: S3ArtifactStore) -> None:
    assert s3_store.current("nothing") is None
    assert s3_store.list_models("nothing") == []


def test_pointer_cannot_name_a_missing_version(s3_store: S3ArtifactStore) -> None:
    with pytest.raises(NotFoundError):
        s3_store.set_current("load", "never-saved")


def test_prune_keeps_the_newest_versions_and_the_current_one(s3_store: S3ArtifactStore,
                                                              s3_server: S3Server) -> None:  # noqa: F811
    for v in ("v1", "v2", "v3", "v4", "v5", "v6"):
        s3_store.save_version("load", v, {"model.json": b"{}", "profile.pt": b"x"}, _meta(v, 3.0))
    s3_store.save_version("load.weather", "v1", {"model.json": b"{}"}, _meta("v1", 3.0))
    s3_store.set_current("load", "v2")  # a current model older than the kept ones (later trainings rejected)
    assert s3_store.prune("load", keep=3) == ["v1", "v3"]
    assert [m["version"] for m in s3_store.list_models("load")] == ["v2", "v4", "v5", "v6"]
    keys = [o["Key"] for o in s3_store._client.list_objects_v2(Bucket=s3_store.bucket)["Contents"]]
    assert not [k for k in keys if k.startswith(("models/load/v1/", "models/load/v3/"))]  # every file, not the meta
    assert [m["version"] for m in s3_store.list_models("load.weather")] == ["v1"]  # another series: untouched


def test_prune_removes_an_old_half_written_version(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    (tmp_path / "models" / "load" / "v0").mkdir(parents=True)
    (tmp_path / "models" / "load" / "v0" / "profile.pt").write_bytes(b"x")  # killed before its meta.json
    for v in ("v1", "v2"):
        store.save_version("load", v, {"model.json": b"{}"}, _meta(v, 3.0))
    assert store.prune("load", keep=2) == ["v0"]
    assert sorted(p.name for p in (tmp_path / "models" / "load").iterdir()) == ["v1", "v2"]


def test_unreachable_s3_raises_artifact_error() -> None:
    from shared.settings import Settings  # noqa: F401 (settings not needed: explicit endpoint)

    dead = S3ArtifactStore("http://127.0.0.1:9", "b", "us-east-1", "k", "s")
    with pytest.raises(ArtifactError):
        dead.current("load")


def test_local_store_has_the_same_layout(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.save_version("load", "v1", {"model.json": b"{}"}, _meta("v1", 3.0))
    store.set_current("load", "v1")
    assert json.loads((tmp_path / "models/load/current.json").read_text())["version"] == "v1"
    assert (tmp_path / "models/load/v1/meta.json").is_file()
    assert store.current("load")["version"] == "v1"  # type: ignore[index]


def test_artifact_module_does_not_load_the_ml_stack() -> None:
    import subprocess
    import sys

    code = "import sys, shared.artifacts; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent).returncode == 0


def test_a_silent_s3_is_given_up_inside_the_query_functions_timeout() -> None:
    # "max_attempts": 2 meant three attempts of 30 s: against a server that accepts and never answers, /models held a
    # worker for 90 s, past the query function's 30 s (the watchdog answered 504, not the typed 503)
    import yaml

    from shared import artifacts
    from shared.settings import REPO_ROOT

    stack = yaml.safe_load((REPO_ROOT / "openfaas-stack.yml").read_text())
    query_timeout = float(stack["functions"]["query"]["environment"]["exec_timeout"].rstrip("s"))
    config = S3ArtifactStore("http://127.0.0.1:9", "b", "us-east-1", "k", "s")._client.meta.config
    attempts = config.retries["total_max_attempts"]
    assert attempts * (config.connect_timeout + config.read_timeout) < query_timeout
    assert (config.read_timeout, attempts) == (artifacts.S3_READ_TIMEOUT_S, artifacts.S3_ATTEMPTS)
