"""AWS SAM deployment (template.yaml, functions/Dockerfile.lambda) and what the functions do with it.

* Secrets: only Secrets Manager ARNs are in the template; the functions read the values at start-up
  (shared/settings.py) through their role, which may read exactly those secrets.
* Artifacts: the stack's bucket reaches every function; a configured bucket is S3 with no local
  fallback (checked against the real SeaweedFS server of tests/fixtures_s3.py, with credentials from
  boto3's default chain as on Lambda); on Lambda a missing bucket stops the function at start-up.
* Reserved concurrency is a parameter that reserves nothing by default.

AWS itself is unreachable from the test machine, so the Secrets Manager API is the one thing stood in
for here: a fake client object with ``get_secret_value`` is injected into the settings loader (the only
stub of an external API in the suite; the template is checked by cfn-lint in test_ops_configs.py).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from shared import settings as settings_mod
from shared.artifacts import LocalArtifactStore, S3ArtifactStore, get_artifact_store
from shared.errors import ArtifactError, ConfigurationError
from shared.settings import SECRET_ARN_FIELDS, Settings
from tests.fixtures_s3 import S3Server, s3_server  # noqa: F401  (session fixture)
from tests.fixtures_topology import REPO, load_sam, sam_functions

ARN = "arn:aws:secretsmanager:eu-west-3:123456789012:secret:powersense/{}-AbCdEf"
SCHEDULED = ("poll", "upsert-version", "featurize", "forecast", "detect")


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_sam()


def _environment(sam: dict[str, Any], stage: str) -> dict[str, Any]:
    """What Lambda gives the function: Globals overlaid by its own variables."""
    env = dict(sam["Globals"]["Function"]["Environment"]["Variables"])
    env.update(sam_functions(sam)[stage]["Properties"].get("Environment", {}).get("Variables", {}))
    return env


def _unless_condition(value: Any) -> Any:
    """The value a ``!If [Condition, value, !Ref AWS::NoValue]`` gives when its condition holds (others as they are)."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, then, otherwise = value["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}, value
        return then
    return value


def _condition(value: Any) -> str | None:
    return value["Fn::If"][0] if isinstance(value, dict) and "Fn::If" in value else None


def _policies(fn: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    policies = [_unless_condition(p) for p in fn["Properties"].get("Policies", [])]
    return [p[kind] for p in policies if isinstance(p, dict) and kind in p]


# --- the template ---------------------------------------------------------------------------------


def test_template_holds_no_secret_value() -> None:
    text = (REPO / "template.yaml").read_text()
    assert "{{resolve:secretsmanager" not in text and "{{resolve:ssm-secure" not in text


def test_the_database_parameter_is_held_to_the_settings_rule(sam: dict[str, Any]) -> None:
    """The database name is written into the DDL; CloudFormation refuses at deploy time what the settings would
    refuse at start-up (one pattern, read from the settings field)."""
    rules = [m.pattern for m in Settings.model_fields["clickhouse_database"].metadata if hasattr(m, "pattern")]
    assert rules and sam["Parameters"]["ClickHouseDatabase"]["AllowedPattern"] == rules[0]


def test_secrets_are_arns_each_function_may_read(sam: dict[str, Any]) -> None:
    params = sam["Parameters"]
    for stage, fn in sam_functions(sam).items():
        env = _environment(sam, stage)
        secretish = {k for k in env if re.search(r"PASSWORD|TOKEN|SECRET|ACCESS_KEY", k)}
        assert secretish and all(k.endswith("_SECRET_ARN") for k in secretish), (stage, secretish)
        readable = {p["SecretArn"]["Ref"] for p in _policies(fn, "AWSSecretsManagerGetSecretValuePolicy")}
        wanted = {_unless_condition(env[k])["Ref"] for k in secretish}
        assert wanted == readable, stage  # the secrets it is given, and no other
        for param in wanted:
            pattern = params[param]["AllowedPattern"]
            if pattern.startswith("^$|"):  # optional: "" leaves the variable out (its !If condition)
                assert params[param]["Default"] == "", param
                pattern = pattern.removeprefix("^$|")
            assert pattern.startswith("^arn:aws"), param
        # the variables are settings the loader knows
        assert {k.removeprefix("POWERSENSE_").removesuffix("_SECRET_ARN").lower() for k in secretish} <= set(
            SECRET_ARN_FIELDS)
    query = _environment(sam, "query")
    assert query["POWERSENSE_CLICKHOUSE_USER"] == "powersense_reader"
    assert query["POWERSENSE_CLICKHOUSE_PASSWORD_SECRET_ARN"] == {"Ref": "ClickHouseReaderPasswordSecretArn"}
    assert _environment(sam, "poll")["POWERSENSE_CLICKHOUSE_USER"] == {"Ref": "ClickHouseWriterUser"}
    assert params["ClickHouseWriterUser"]["Default"] == "powersense_writer"


def test_reserved_concurrency_is_a_parameter_that_reserves_nothing_by_default(sam: dict[str, Any]) -> None:
    param = sam["Parameters"]["ReservedConcurrency"]
    condition = sam["Conditions"]["HasReservedConcurrency"]
    assert condition == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ReservedConcurrency"}, param["Default"]]}]}
    for stage, fn in sam_functions(sam).items():
        rc = fn["Properties"].get("ReservedConcurrentExecutions")
        if stage == "query":
            assert rc is None  # the read API scales out
            continue
        assert rc == {"Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}


def test_no_scheduled_stage_is_retried_by_lambda_or_the_scheduler(sam: dict[str, Any]) -> None:
    # the scheduler's RetryPolicy covers delivery only; Lambda's own asynchronous retries (2 by default) re-ran a
    # stage that timed out, overlapping its next run
    scheduled = 0
    for stage, fn in sam_functions(sam).items():
        events = [e for e in fn["Properties"].get("Events", {}).values() if e["Type"] == "ScheduleV2"]
        if not events:
            continue
        scheduled += 1
        config = fn["Properties"].get("EventInvokeConfig", sam["Globals"]["Function"].get("EventInvokeConfig", {}))
        assert config.get("MaximumRetryAttempts") == 0, stage
        assert all(e["Properties"]["RetryPolicy"]["MaximumRetryAttempts"] == 0 for e in events), stage
    assert scheduled == 6


def test_the_stack_bucket_reaches_the_functions_that_use_artifacts(sam: dict[str, Any]) -> None:
    functions = sam_functions(sam)
    for stage in functions:
        env = _environment(sam, stage)
        assert env["POWERSENSE_S3_BUCKET"] == {"Ref": "ModelsBucket"}
        assert not {"POWERSENSE_S3_ENDPOINT_URL", "POWERSENSE_ARTIFACTS_DIR", "POWERSENSE_S3_ACCESS_KEY_ID"} & set(env)
    # exactly the two functions that open the artifact store (functions/forecast/handler.py, shared/query/service.py)
    granted = {(stage, kind) for stage, fn in functions.items() for kind in ("S3CrudPolicy", "S3ReadPolicy")
               if {"BucketName": {"Ref": "ModelsBucket"}} in _policies(fn, kind)}
    assert granted == {("forecast", "S3CrudPolicy"), ("query", "S3ReadPolicy")}
    dockerfile = (REPO / "functions" / "Dockerfile.lambda").read_text()
    assert not re.search(r"^\s*(ENV|ARG)\b.*POWERSENSE_ARTIFACTS_DIR", dockerfile, re.M)


# --- the functions on Lambda -------------------------------------------------------------------------


class FakeSecretsManager:
    """Stand-in for boto3's secretsmanager client (AWS is unreachable here): values by ARN, calls counted."""

    def __init__(self, values: dict[str, str], fail: bool = False) -> None:
        self.values = values
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    def factory(self, region: str) -> FakeSecretsManager:
        self.region = region
        return self

    def get_secret_value(self, SecretId: str) -> dict[str, str]:  # noqa: N803 - boto3's argument name
        self.calls.append((self.region, SecretId))
        if self.fail:
            raise RuntimeError("AccessDeniedException: not authorized to perform secretsmanager:GetSecretValue")
        return {"ARN": SecretId, "SecretString": self.values[SecretId]}


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A process environment like the Lambda runtime's: AWS_LAMBDA_FUNCTION_NAME, no secret files."""
    for key in [k for k in __import__("os").environ if k.startswith("POWERSENSE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("POWERSENSE_SECRETS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "powersense-test")
    yield monkeypatch
    settings_mod.set_secrets_client_factory(None)
    settings_mod.get_settings.cache_clear()


def _apply_template_env(monkeypatch: pytest.MonkeyPatch, sam: dict[str, Any], stage: str, admin_token: bool = False
                        ) -> None:
    """The function's environment as CloudFormation resolves it (``admin_token``: the AdminTokenSecretArn parameter
    is given, so the HasAdminToken condition holds)."""
    conditions = {"HasAdminToken": admin_token}
    values = {"AdminTokenSecretArn": ARN.format("admin-token") if admin_token else "",
              "ClickHouseUrl": "https://clickhouse.internal:8443", "ClickHouseDatabase": "electricity",
              "ClickHouseWriterUser": "powersense_writer", "ModelsBucket": "powersense-modelsbucket-1a2b3c",
              "AWS::Region": "eu-west-3", "PushgatewayUrl": "", "SourceUrl": "https://odre.example/api/explore/v2.1",
              "LogLevel": "INFO", "ClickHouseWriterPasswordSecretArn": ARN.format("clickhouse-writer"),
              "ClickHouseReaderPasswordSecretArn": ARN.format("clickhouse-reader"),
              "QueryTokenSecretArn": ARN.format("query-token")}
    for key, value in _environment(sam, stage).items():
        if _condition(value) is not None and not conditions[str(_condition(value))]:
            continue  # !Ref AWS::NoValue: no variable
        value = _unless_condition(value)
        resolved = values[value["Ref"]] if isinstance(value, dict) else str(value)
        if resolved:
            monkeypatch.setenv(key, resolved)


SECRETS = {ARN.format("clickhouse-writer"): "writer-pw", ARN.format("clickhouse-reader"): "reader-pw",
           ARN.format("query-token"): "t0ken", ARN.format("admin-token"): "adm1n"}


def test_lambda_functions_read_their_secrets_once_at_start_up(sam: dict[str, Any],
                                                               lambda_env: pytest.MonkeyPatch) -> None:
    fake = FakeSecretsManager(SECRETS)
    settings_mod.set_secrets_client_factory(fake.factory)
    _apply_template_env(lambda_env, sam, "upsert-version")
    writer = Settings()
    assert writer.clickhouse_password.get_secret_value() == "writer-pw" and writer.query_token is None
    assert writer.artifacts_backend == "s3" and writer.s3_endpoint_url is None  # AWS S3, role credentials
    assert writer.s3_bucket == "powersense-modelsbucket-1a2b3c" and writer.s3_access_key_id is None
    Settings()  # a second load (e.g. the query app's own get_settings) does not call AWS again
    assert fake.calls == [("eu-west-3", ARN.format("clickhouse-writer"))]
    _apply_template_env(lambda_env, sam, "query")
    reader = Settings()
    assert reader.clickhouse_user == "powersense_reader"
    assert reader.clickhouse_password.get_secret_value() == "reader-pw"
    assert reader.query_token is not None and reader.query_token.get_secret_value() == "t0ken"
    assert isinstance(get_artifact_store(reader), S3ArtifactStore)


def test_an_unreadable_secret_stops_start_up_naming_the_variable(sam: dict[str, Any],
                                                                  lambda_env: pytest.MonkeyPatch) -> None:
    settings_mod.set_secrets_client_factory(FakeSecretsManager(SECRETS, fail=True).factory)
    _apply_template_env(lambda_env, sam, "poll")
    with pytest.raises(ConfigurationError, match="POWERSENSE_CLICKHOUSE_PASSWORD_SECRET_ARN: cannot read the secret"):
        settings_mod.get_settings()
    settings_mod.set_secrets_client_factory(FakeSecretsManager(SECRETS).factory)
    lambda_env.setenv("POWERSENSE_CLICKHOUSE_PASSWORD", "plain")
    with pytest.raises(ConfigurationError, match="POWERSENSE_CLICKHOUSE_PASSWORD_SECRET_ARN: .* set too"):
        Settings()
    lambda_env.delenv("POWERSENSE_CLICKHOUSE_PASSWORD")
    lambda_env.setenv("POWERSENSE_CLICKHOUSE_PASSWORD_SECRET_ARN", "powersense/clickhouse-writer")
    with pytest.raises(ConfigurationError, match="POWERSENSE_CLICKHOUSE_PASSWORD_SECRET_ARN: not a Secrets"):
        Settings()


def test_lambda_without_a_bucket_stops_at_start_up(lambda_env: pytest.MonkeyPatch) -> None:
    lambda_env.setenv("POWERSENSE_CLICKHOUSE_URL", "https://clickhouse.internal:8443")
    with pytest.raises(ConfigurationError, match="POWERSENSE_S3_BUCKET: must be set on AWS Lambda"):
        settings_mod.get_settings()
    lambda_env.delenv("POWERSENSE_CLICKHOUSE_URL")
    lambda_env.setenv("POWERSENSE_S3_BUCKET", "powersense-models")
    with pytest.raises(ConfigurationError, match="POWERSENSE_CLICKHOUSE_URL: must be set on AWS Lambda"):
        Settings()


@pytest.mark.parametrize(("env", "variable"), [
    ({"POWERSENSE_S3_BUCKET": "Models_Bucket"}, "POWERSENSE_S3_BUCKET"),
    ({"POWERSENSE_S3_BUCKET": ""}, "POWERSENSE_S3_BUCKET"),
    ({"POWERSENSE_S3_ENDPOINT_URL": "seaweedfs:8333"}, "POWERSENSE_S3_ENDPOINT_URL"),
    ({"POWERSENSE_S3_BUCKET": "models", "POWERSENSE_S3_ACCESS_KEY_ID": "key-only"}, "POWERSENSE_S3_ACCESS_KEY_ID"),
])
def test_a_configured_but_unusable_bucket_stops_start_up(env: dict[str, str], variable: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match=variable):
        Settings()


def test_nothing_configured_is_the_local_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    s = Settings()
    assert s.artifacts_backend == "local" and isinstance(get_artifact_store(s), LocalArtifactStore)


# --- a configured bucket is S3, never a local directory (real SeaweedFS) ------------------------------


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_bucket_with_the_default_credential_chain_writes_to_s3_only(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path  # noqa: F811
) -> None:
    """As on Lambda: only POWERSENSE_S3_BUCKET; endpoint and credentials come from boto3's default chain
    (here AWS_ENDPOINT_URL_S3 and AWS_ACCESS_KEY_ID/… pointing at SeaweedFS; on Lambda the role)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("POWERSENSE_S3_BUCKET", "t-default-chain")
    monkeypatch.setenv("POWERSENSE_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    settings = Settings()
    store = get_artifact_store(settings)
    assert isinstance(store, S3ArtifactStore)
    store.save_version("load", "v1", {"model.json": b"{}"}, {"trained_at": "2023-01-01T00:00:00+00:00"})
    store.set_current("load", "v1")
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=s3_server.access_key,
                          aws_secret_access_key=s3_server.secret_key, region_name="us-east-1")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="t-default-chain")["Contents"]}
    assert keys == {"models/load/v1/model.json", "models/load/v1/meta.json", "models/load/current.json"}
    assert _files(tmp_path / "artifacts") == []


def test_an_unreachable_bucket_fails_instead_of_writing_locally(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("POWERSENSE_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("POWERSENSE_S3_BUCKET", "t-unreachable")
    monkeypatch.setenv("POWERSENSE_S3_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("POWERSENSE_S3_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("POWERSENSE_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    store = get_artifact_store(Settings())
    with pytest.raises(ArtifactError):
        store.save_version("load", "v1", {"model.json": b"{}"}, {})
    assert _files(tmp_path / "artifacts") == []


# --- the images' C library against the pinned wheels -------------------------------------------------------

# glibc of each base image the Dockerfiles build on. python:3.11-slim-bookworm: Debian 12, glibc 2.36;
# python:3.11-slim: Debian 13 (trixie) since 2025-08, glibc 2.41, 2.36 before — the lower is taken.
# public.ecr.aws/lambda/python:3.11 is Amazon Linux 2 (AWS Lambda runtimes table: python3.11 on AL2; 3.12
# and later on AL2023), glibc 2.26 — listed so that a return to it fails here, not in `sam build`.
BASE_IMAGE_GLIBC = {"python:3.11-slim-bookworm": (2, 36), "python:3.11-slim": (2, 36),
                    "public.ecr.aws/lambda/python:3.11": (2, 26)}
# manylinux aliases (PEP 600): manylinux1 = glibc 2.5, manylinux2010 = 2.12, manylinux2014 = 2.17
_MANYLINUX_ALIASES = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def _glibc_needed(tags: list[str]) -> tuple[int, int] | None:
    """The least glibc any of a wheel's x86_64 tags runs on ((0, 0) for a pure wheel; None: no Linux tag)."""
    needs = []
    for tag in tags:
        platform = tag.rsplit("-", 1)[-1]
        for plat in platform.split("."):
            if plat == "any":
                needs.append((0, 0))
            elif m := re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", plat):
                needs.append((int(m[1]), int(m[2])))
            elif m := re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_x86_64", plat):
                needs.append(_MANYLINUX_ALIASES[m[1]])
    return min(needs) if needs else None


def _closure(requirement_files: list[str]) -> set[str]:
    """The installed distributions the pinned requirements pull in (this environment's, the pins CI installs)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo, seen = [], set()
    for name in requirement_files:
        for line in (REPO / "requirements" / f"{name}.txt").read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                todo.append(Requirement(line))
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        if key in seen:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: awslambdaric (Lambda only; its cp311 wheel 4.2.2 is manylinux2014)
        seen.add(key)
        for spec in dist.requires or []:
            r = Requirement(spec)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r)
    return seen


def _image_needs(requirement_files: list[str]) -> dict[str, tuple[int, int]]:
    from importlib import metadata

    needs = {}
    for name in _closure(requirement_files):
        wheel = metadata.distribution(name).read_text("WHEEL") or ""
        need = _glibc_needed(re.findall(r"^Tag: (\S+)$", wheel, re.M))
        if need is not None:
            needs[name] = need
    return needs


@pytest.mark.parametrize(("dockerfile", "requirement_files"), [
    ("functions/Dockerfile.lambda", ["ml", "lambda"]),
    ("template/powersense-python/Dockerfile", ["ml"]),
])
def test_every_pinned_wheel_runs_on_the_images_c_library(dockerfile: str, requirement_files: list[str]) -> None:
    # torch 2.13's x86_64 wheels are manylinux_2_28: on the Lambda Python 3.11 base (glibc 2.26) pip found no
    # wheel and the forecast image could not be built
    bases = [b for b in re.findall(r"^FROM\s+(\S+)", (REPO / dockerfile).read_text(), re.M)
             if b.startswith(("python:", "public.ecr.aws/lambda/"))]
    assert len(bases) == 1, bases
    glibc = BASE_IMAGE_GLIBC[bases[0]]
    needs = _image_needs(requirement_files)
    assert needs["torch"] >= (2, 28)  # the wheel that made this check necessary is among those read
    too_new = {name: need for name, need in needs.items() if need > glibc}
    assert not too_new, f"{dockerfile} ({bases[0]}, glibc {glibc}) cannot install {too_new}"


def test_the_glibc_check_rejects_amazon_linux_2_for_torch() -> None:
    needs = _image_needs(["ml"])
    assert needs["torch"] > BASE_IMAGE_GLIBC["public.ecr.aws/lambda/python:3.11"]
    assert _glibc_needed(["cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64"]) == (2, 17)
    assert _glibc_needed(["py3-none-any"]) == (0, 0)


# --- what a Lambda install needs beyond the happy path ------------------------------------------------------------


def test_stage_options_have_an_admin_token_on_lambda_when_its_secret_is_given(
    sam: dict[str, Any], lambda_env: pytest.MonkeyPatch
) -> None:
    # no parameter provisioned it: every request with options (a backfill, force_train) was refused with 401
    settings_mod.set_secrets_client_factory(FakeSecretsManager(SECRETS).factory)
    for stage in (*SCHEDULED, "poll-weather"):
        _apply_template_env(lambda_env, sam, stage, admin_token=True)
        token = Settings().admin_token
        assert token is not None and token.get_secret_value() == "adm1n", stage
        lambda_env.delenv("POWERSENSE_ADMIN_TOKEN_SECRET_ARN")


def test_without_the_admin_token_parameter_no_function_is_given_one(
    sam: dict[str, Any], lambda_env: pytest.MonkeyPatch
) -> None:
    settings_mod.set_secrets_client_factory(FakeSecretsManager(SECRETS).factory)
    for stage in sam_functions(sam):
        _apply_template_env(lambda_env, sam, stage, admin_token=False)
        assert Settings().admin_token is None, stage
    assert "POWERSENSE_ADMIN_TOKEN_SECRET_ARN" not in _environment(sam, "query")  # the read API takes no options


def test_schedule_names_are_the_stacks_own(sam: dict[str, Any]) -> None:
    # SAM names a schedule after its event's logical id, and names are keys of the account's default schedule group:
    # a second stack (staging beside production) failed to create PollFunctionCron
    names = []
    for stage, fn in sam_functions(sam).items():
        for event in fn["Properties"].get("Events", {}).values():
            if event["Type"] == "ScheduleV2":
                names.append(event["Properties"]["Name"])
                assert event["Properties"]["Name"] == {"Fn::Sub": f"${{AWS::StackName}}-{stage}"}
    assert len(names) == len(set(map(str, names))) == 6


def test_the_query_api_is_throttled_before_any_function_runs(sam: dict[str, Any]) -> None:
    # each request, authenticated or not, invokes the function: unthrottled, a burst took the account's
    # concurrency from the scheduled stages
    route = sam["Resources"]["QueryApi"]["Properties"]["DefaultRouteSettings"]
    params = sam["Parameters"]
    rate, burst = route["ThrottlingRateLimit"]["Ref"], route["ThrottlingBurstLimit"]["Ref"]
    assert 0 < params[rate]["Default"] <= params[burst]["Default"]


def test_pruned_and_replaced_artifacts_expire_in_the_versioned_bucket(sam: dict[str, Any]) -> None:
    # a delete in a versioned bucket only adds a marker: pruned models stayed stored for good
    bucket = sam["Resources"]["ModelsBucket"]["Properties"]
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    rules = [r for r in bucket["LifecycleConfiguration"]["Rules"] if r["Status"] == "Enabled"]
    assert any(r["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0 and r["ExpiredObjectDeleteMarker"]
               for r in rules)


def test_a_secrets_endpoint_that_never_answers_fails_start_up_within_lambdas_init_phase(
    lambda_env: pytest.MonkeyPatch,
) -> None:
    # subnets with no route to Secrets Manager: botocore's defaults waited 60 s per read and retried, so the function
    # died "Task timed out" with no line naming the setting
    config = settings_mod.secrets_client_config()
    attempts = config.retries["total_max_attempts"]
    assert attempts * (config.connect_timeout + config.read_timeout) <= 10  # Lambda's init phase: 10 s
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        lambda_env.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{silent.getsockname()[1]}")
        lambda_env.setenv("AWS_ACCESS_KEY_ID", "test")
        lambda_env.setenv("AWS_SECRET_ACCESS_KEY", "test")
        settings_mod.set_secrets_client_factory(None)
        variable = "POWERSENSE_CLICKHOUSE_PASSWORD_SECRET_ARN"
        with pytest.raises(ConfigurationError, match=f"{variable}: cannot read .*timeout"):
            settings_mod.read_aws_secret(ARN.format("clickhouse-writer"), variable)
    finally:
        silent.close()


def test_the_openfaas_and_lambda_images_build_on_the_same_pinned_debian() -> None:
    # the template's bare python:3.11-slim became Debian 13 in 2025-08 while the Lambda image stayed on Debian 12:
    # "the same Python and glibc" no longer held, and a rebuild of one release could change the OS under it
    bases = {f: [b for b in re.findall(r"^FROM\s+(\S+)", (REPO / f).read_text(), re.M) if b.startswith("python:")]
             for f in ("functions/Dockerfile.lambda", "template/powersense-python/Dockerfile")}
    assert [b for found in bases.values() for b in found] == ["python:3.11-slim-bookworm"] * 2, bases
