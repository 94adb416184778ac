"""Artifact store: versioned files (bytes) on S3/MinIO through boto3, or a local directory with the same layout.

Layout (keys under the bucket, or paths under ``settings.artifacts_dir``)::

    models/<series>/<version>/model.json, profile.pt, level.pt   the model files (+ profile_<k>.pt, level_<k>.pt:
                                                                 the networks of the other seeds; a short
                                                                 series' model has no level*.pt)
    models/<series>/<version>/meta.json                          written last: the version is complete
    models/<series>/current.json                                 the pointer (one PUT / one rename: atomic)

Stable API (used by the forecast stage and by the query stage's ``/models`` endpoint). The store holds
bytes and metadata only and imports nothing of the forecasting domain: turning a model into files and
back is ``shared/forecasting/registry.py`` (so the light query stage never reaches torch):

* ``list_models(series) -> list[dict]`` — every complete version, oldest first; each dict is the
  version's metadata: ``version``, ``trained_at``, ``training_window`` [start, end], ``holdout``,
  ``data_fingerprint``, ``library_versions``, ``backtest_metrics``, ``decision`` ('promoted' |
  'rejected'), ``decision_reason``, plus ``current`` (bool).
* ``current(series) -> dict | None`` — the metadata of the version the pointer names, plus
  ``pointer_updated_at``; None when no model was ever promoted.
* ``save_version(series, version, files, meta)`` / ``get_files(series, version)`` — a version's files
  (name → bytes); ``set_current`` / ``update_meta`` move the pointer / annotate a version.
* ``prune(series, keep)`` — delete all but the ``keep`` newest versions and the current one (the forecast stage
  does it after each training: ``POWERSENSE_FORECAST_KEEP_VERSIONS``).

Every failure of the backend raises :class:`shared.errors.ArtifactError` (HTTP 503: the store is down or refuses);
a stored object that cannot be read as what it should be (a pointer or metadata that is not JSON, a pointer naming
a version that does not exist, a listed file missing) raises :class:`shared.errors.ModelError`: the store answered,
the model is damaged, and the forecast stage replaces it by training rather than waiting.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.errors import ArtifactError, ModelError, NotFoundError
from shared.settings import Settings

log = logging.getLogger(__name__)


def _document(raw: bytes, key: str) -> dict[str, Any]:
    """A JSON object stored at ``key`` (ModelError when it is not one: truncated, hand-edited)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{key} is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ModelError(f"{key} is not a JSON object")
    return doc

PREFIX = "models"
META = "meta.json"
POINTER = "current.json"


def _check_name(name: str, what: str) -> str:
    if not name or "/" in name or name.startswith(".") or len(name) > 200:
        raise ArtifactError(f"invalid {what} name {name!r}")
    return name


class ArtifactStore(ABC):
    """Versioned model files with an atomic ``current`` pointer per series."""

    # --- backend primitives ------------------------------------------------------------------
    @abstractmethod
    def _put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def _get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""

    @abstractmethod
    def _list_dirs(self, prefix: str) -> list[str]:
        """Immediate sub-"directories" under ``prefix`` (names only)."""

    @abstractmethod
    def _delete(self, key: str) -> None:
        """Delete one object (absent: nothing to do)."""

    @abstractmethod
    def _delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (a version's "directory")."""

    # --- API ------------------------------------------------------------------------------------
    def save_version(self, series: str, version: str, files: dict[str, bytes], meta: dict[str, Any]) -> None:
        """Store a version's files, then its ``meta.json`` (so a half-written version is never listed)."""
        base = f"{PREFIX}/{_check_name(series, 'series')}/{_check_name(version, 'version')}"
        for name, data in files.items():
            self._put(f"{base}/{_check_name(name, 'file')}", data)
        doc = {**meta, "version": version, "files": sorted(files)}
        self._put(f"{base}/{META}", json.dumps(doc, sort_keys=True, default=str).encode())

    def set_current(self, series: str, version: str, meta: dict[str, Any] | None = None, *,
                    held: bool = False) -> None:
        """Point ``current`` at ``version`` (one atomic write of ``current.json``). ``held``: the operator holds it
        (``set-current-model --hold``): no training replaces it until released."""
        if self.meta(series, version) is None:
            raise NotFoundError(f"model {series}/{version} does not exist")
        doc: dict[str, Any] = {"version": version, "updated_at": datetime.now(UTC).isoformat()}
        if held:
            doc["held"] = True
        self._put(f"{PREFIX}/{_check_name(series, 'series')}/{POINTER}", json.dumps(doc).encode())

    def update_meta(self, series: str, version: str, **fields: Any) -> None:
        """Merge fields into a version's metadata (e.g. why it was not promoted)."""
        meta = self.meta(series, version)
        if meta is None:
            raise NotFoundError(f"model {series}/{version} does not exist")
        meta.update(fields)
        self._put(f"{PREFIX}/{series}/{version}/{META}", json.dumps(meta, sort_keys=True, default=str).encode())

    def meta(self, series: str, version: str) -> dict[str, Any] | None:
        """A version's metadata, or None (ModelError when it is not a JSON object)."""
        key = f"{PREFIX}/{_check_name(series, 'series')}/{_check_name(version, 'version')}/{META}"
        raw = self._get(key)
        return _document(raw, key) if raw else None

    def _pointer(self, series: str) -> dict[str, Any] | None:
        key = f"{PREFIX}/{_check_name(series, 'series')}/{POINTER}"
        raw = self._get(key)
        if not raw:
            return None
        ptr = _document(raw, key)
        if not isinstance(ptr.get("version"), str):
            raise ModelError(f"{key} names no version")
        return ptr

    def current_version(self, series: str) -> str | None:
        """The version ``current`` points at, or None."""
        ptr = self._pointer(series)
        return ptr["version"] if ptr else None

    def current(self, series: str) -> dict[str, Any] | None:
        """Metadata of the current model (+ ``pointer_updated_at``), or None when none was promoted. A pointer or
        metadata that cannot be read as a model (not JSON, a version that does not exist: a restore cut short, a
        hand edit) is a ModelError, not an ArtifactError: the store answered, and the forecast stage trains a model
        to replace it rather than waiting for a store that is not down."""
        ptr = self._pointer(series)
        if ptr is None:
            return None
        meta = self.meta(series, ptr["version"])
        if meta is None:
            raise ModelError(f"current pointer of {series} names missing version {ptr['version']}")
        return {**meta, "pointer_updated_at": ptr.get("updated_at"), "current": True, "held": ptr.get("held") is True}

    def list_models(self, series: str) -> list[dict[str, Any]]:
        """Metadata of every complete version of ``series``, oldest first, with ``current`` and ``held`` flags."""
        ptr = self._pointer(series)
        cur, held = (ptr["version"], ptr.get("held") is True) if ptr else (None, False)
        out = []
        for version in sorted(self._list_dirs(f"{PREFIX}/{_check_name(series, 'series')}/")):
            try:
                meta = self.meta(series, version)
            except ModelError as exc:  # one damaged old version must not hide the others (/models answered 503)
                log.warning("model_meta_unreadable", extra={"event": "model_meta_unreadable", "error": str(exc)})
                continue
            if meta is not None:
                out.append({**meta, "current": version == cur, "held": held and version == cur})
        return out

    def prune(self, series: str, keep: int) -> list[str]:
        """Delete the versions of ``series`` older than its ``keep`` newest (names sort by training time), never the
        one ``current`` names; the deleted versions, oldest first. A version loses its ``meta.json`` first, so a
        prune cut short leaves it unlisted (as a half-written one is) and the next prune finishes it; a
        half-written version (no ``meta.json``: a training killed while saving) counts as a version, so once older
        than the ``keep`` newest it goes too."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        base = f"{PREFIX}/{_check_name(series, 'series')}/"
        cur = self.current_version(series)
        old = sorted(self._list_dirs(base))[:-keep]
        gone = [v for v in old if v != cur]
        for version in gone:
            self._delete(f"{base}{version}/{META}")
            self._delete_prefix(f"{base}{version}/")
        return gone

    def get_files(self, series: str, version: str) -> dict[str, bytes]:
        """A version's model files (not the metadata)."""
        meta = self.meta(series, version)
        if meta is None:
            raise NotFoundError(f"model {series}/{version} does not exist")
        files = {}
        for name in meta.get("files", []):
            data = self._get(f"{PREFIX}/{series}/{version}/{name}")
            if data is None:  # the store answered: the version is damaged, not the store down
                raise ModelError(f"model {series}/{version} lacks {name}")
            files[name] = data
        return files


class LocalArtifactStore(ArtifactStore):
    """The embedded default: a directory tree with the S3 key layout; the pointer is renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file
        except OSError as exc:
            raise ArtifactError(f"cannot write {path}: {exc}") from exc

    def _get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"cannot read {path}: {exc}") from exc

    def _list_dirs(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        if not path.is_dir():
            return []
        return [p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def _delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise ArtifactError(f"cannot delete {key}: {exc}") from exc

    def _delete_prefix(self, prefix: str) -> None:
        try:
            shutil.rmtree(self._path(prefix), ignore_errors=False)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ArtifactError(f"cannot delete {prefix}: {exc}") from exc


# botocore's client limits for the artifact store (tests/test_artifacts_s3.py ties them to the functions' timeouts)
S3_CONNECT_TIMEOUT_S = 3
S3_READ_TIMEOUT_S = 10
S3_ATTEMPTS = 2


class S3ArtifactStore(ArtifactStore):
    """S3 / MinIO / SeaweedFS through boto3. The bucket is created on first write if missing."""

    def __init__(self, endpoint_url: str | None, bucket: str, region: str, access_key: str | None,
                 secret_key: str | None) -> None:
        """``endpoint_url`` None = AWS S3; no keys = boto3's default credential chain (e.g. the Lambda role)."""
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self._bucket_ok = False
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            # fail fast when the store is down: the forecast stage falls back instead of hanging, and the query
            # function's /models answers its 503 inside its 30 s. botocore's "max_attempts" counts RETRIES (three
            # attempts of 30 s: 90 s against a silent server); total_max_attempts counts attempts. read_timeout is
            # per socket read, not per object, so a large model file is not cut short by it.
            config=Config(connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=S3_READ_TIMEOUT_S,
                          retries={"total_max_attempts": S3_ATTEMPTS, "mode": "standard"},
                          # path-style for S3-compatible servers (SeaweedFS/MinIO by service name);
                          # AWS S3 picks its own (virtual-hosted) style
                          s3={"addressing_style": "path" if endpoint_url else "auto"}),
        )

    def _errors(self) -> tuple[type[BaseException], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    def _ensure_bucket(self) -> None:
        if self._bucket_ok:
            return
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._client.create_bucket(Bucket=self.bucket)
        self._bucket_ok = True

    def _put(self, key: str, data: bytes) -> None:
        try:
            self._ensure_bucket()
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except self._errors() as exc:
            raise ArtifactError(f"S3 put {key} failed: {exc}") from exc

    def _get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=key)
            return bytes(obj["Body"].read())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NoSuchBucket", "NotFound"):
                return None
            raise ArtifactError(f"S3 get {key} failed: {exc}") from exc
        except self._errors() as exc:
            raise ArtifactError(f"S3 get {key} failed: {exc}") from exc

    def _list_dirs(self, prefix: str) -> list[str]:
        from botocore.exceptions import ClientError

        names: list[str] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            ):
                for cp in page.get("CommonPrefixes", []):
                    names.append(cp["Prefix"][len(prefix):].rstrip("/"))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") == "NoSuchBucket":
                return []
            raise ArtifactError(f"S3 list {prefix} failed: {exc}") from exc
        except self._errors() as exc:
            raise ArtifactError(f"S3 list {prefix} failed: {exc}") from exc
        return names

    def _delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)  # S3: deleting an absent key succeeds
        except self._errors() as exc:
            raise ArtifactError(f"S3 delete {key} failed: {exc}") from exc

    def _delete_prefix(self, prefix: str) -> None:
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:  # a page holds at most 1,000 keys, DeleteObjects' limit
                    out = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                    if out.get("Errors"):
                        raise ArtifactError(f"S3 delete under {prefix} failed: {out['Errors'][:3]}")
        except self._errors() as exc:
            raise ArtifactError(f"S3 delete under {prefix} failed: {exc}") from exc


_stores: dict[tuple[Any, ...], ArtifactStore] = {}
_lock = threading.Lock()


def get_artifact_store(settings: Settings) -> ArtifactStore:
    """The process-wide artifact store: S3 when an endpoint or a bucket is configured
    (``settings.artifacts_backend``; never a local fallback then), else ``artifacts_dir``."""
    backend = settings.artifacts_backend
    key: tuple[Any, ...] = (backend, settings.s3_endpoint_url, settings.s3_bucket, str(settings.artifacts_dir))
    with _lock:
        if key not in _stores:
            if backend == "s3":
                _stores[key] = S3ArtifactStore(
                    settings.s3_endpoint_url,
                    settings.s3_bucket,
                    settings.s3_region,
                    settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None,
                    settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None,
                )
            else:
                _stores[key] = LocalArtifactStore(settings.artifacts_dir)
        return _stores[key]


def set_current_main(argv: list[str] | None = None) -> int:
    """``python -m shared set-current-model SERIES [VERSION] [--hold | --release]``: point a series' current model at
    a stored version (a rollback: a newer model that misbehaves, an artifact saved by a newer release after a code
    rollback); without VERSION, list the stored versions (JSON lines, oldest first) and exit. The normal rule then
    applies: the next training replaces it only if not worse on its holdout — unless ``--hold``: no training
    replaces a held model (the forecast stage trains none for the series; a requested one is saved, not promoted)
    until ``SERIES --release``."""
    import argparse

    from shared.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m shared set-current-model", description=set_current_main.__doc__)
    parser.add_argument("series", help="artifact series, e.g. eco2mix_national.consommation.30min (+ .weather)")
    parser.add_argument("version", nargs="?", help="a stored version of the series (omit to list them)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--hold", action="store_true", help="hold it: no training replaces it until --release")
    mode.add_argument("--release", action="store_true", help="release the series' held model (no VERSION): the "
                      "normal rule applies again from the next run")
    args = parser.parse_args(argv)
    if args.release and args.version is not None:
        parser.error("--release takes no VERSION: it releases the model the series holds now")
    artifacts = get_artifact_store(get_settings())
    if args.release:
        held = artifacts.current(args.series)
        if held is None:
            raise NotFoundError(f"series {args.series} has no current model to release")
        artifacts.set_current(args.series, held["version"])
        print(json.dumps({"series": args.series, "current": held["version"], "held": False,
                          "was_held": held["held"], "at": datetime.now(UTC).isoformat()}))
        return 0
    if args.version is None:
        for m in artifacts.list_models(args.series):
            print(json.dumps({k: m.get(k) for k in ("version", "trained_at", "decision", "current", "held")}))
        return 0
    try:
        previous = artifacts.current_version(args.series)
    except ModelError:
        previous = None  # a damaged pointer is what this command repairs
    now = datetime.now(UTC).isoformat()
    try:  # update_meta reads the version's metadata: NotFoundError when the version does not exist
        artifacts.update_meta(args.series, args.version, set_current_by_operator_at=now, replaced_version=previous)
    except NotFoundError as exc:
        known = [m["version"] for m in artifacts.list_models(args.series)]
        raise NotFoundError(f"{exc}; stored versions: {known}") from exc
    artifacts.set_current(args.series, args.version, held=args.hold)
    print(json.dumps({"series": args.series, "current": args.version, "previous": previous, "held": args.hold,
                      "at": now}))
    return 0
