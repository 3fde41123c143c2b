"""A BlobStore on any S3 endpoint (AWS S3, MinIO, SeaweedFS) through boto3.

Why boto3 alone: everything the vault needs is the standard S3 API (buckets, multipart
writes, ranged GETs, object tags, lifecycle configuration with tag filters, versioning and
``ListObjectVersions``), and boto3 speaks it to every one of those servers. The minio SDK would
add nothing there; what is MinIO-specific (users, policies, KMS) is server administration, done
once by the deployment's init step with ``mc``, not by the application at run time.

Objects are ciphertext produced by the vault. Server-side encryption and object lock are not
relied on (SeaweedFS and MinIO gaps, see the architecture notes), and checksums are only sent
where S3 requires them: the AEAD format authenticates every chunk end to end, and the newer
default checksums are not implemented alike by every S3-compatible server.

Credentials come from the usual boto3 chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
a profile, an instance role), never from the store URL. The running application needs, on the
bucket: s3:ListBucket, s3:ListBucketVersions, s3:ListBucketMultipartUploads,
s3:GetBucketVersioning, s3:GetObject, s3:PutObject, s3:DeleteObject, s3:DeleteObjectVersion,
s3:GetObjectTagging, s3:PutObjectTagging, s3:AbortMultipartUpload. ``ensure_ready`` (run by
``init``) also needs s3:CreateBucket, s3:GetLifecycleConfiguration and
s3:PutLifecycleConfiguration.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage_backends import base

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from types_boto3_s3.client import S3Client
    from types_boto3_s3.type_defs import LifecycleRuleOutputTypeDef, LifecycleRuleTypeDef

__all__ = ["DEFAULT_WINDOW", "S3Store"]

#: Size of each ranged GET: a long read is a series of these, so no single response is huge
#: and a stalled connection costs at most one window.
DEFAULT_WINDOW = 8 * 1024 * 1024
_CHUNK = 256 * 1024
# A read that breaks mid-window is resumed from where it stopped this many times before the
# store is declared unavailable (botocore does not retry a response body that was cut off).
_RESUMES = 2
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MAX_STORE_PREFIX = 128
_DELETE_BATCH = 1000
_PROBE_TIMEOUT = 3.0
_RULE_FIELDS = (
    "ID",
    "Status",
    "Filter",
    "Expiration",
    "AbortIncompleteMultipartUpload",
    "NoncurrentVersionExpiration",
)
_SCHOOL_YEAR_TAG = "school-year"

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchVersion", "NotFound", "404"})
_CONFLICT = frozenset(
    {
        "NoSuchUpload",
        "InvalidPart",
        "InvalidPartOrder",
        "EntityTooSmall",
        "PreconditionFailed",
        "412",
        "KeyTooLongError",
        "InvalidTag",
    }
)
# Access problems count as unavailable: the store cannot serve the vault until an operator
# fixes credentials or the bucket, which is what the health check must report.
_UNAVAILABLE = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "RequestTimeTooSkewed",
        "SlowDown",
        "Throttling",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalError",
        "XMinioServerNotInitialized",
        "XMinioStorageFull",
        "403",
    }
)


def _error_code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status)


def _translate(exc: Exception, action: str, key: str | None = None) -> base.StorageError:
    """Map a botocore failure to the port's errors; the original stays chained for logs."""
    if isinstance(exc, ClientError):
        code, status = _error_code(exc)
        if code in _NOT_FOUND:
            return base.ObjectNotFound(key if key is not None else f"not found: cannot {action}")
        if code in _CONFLICT:
            return base.StorageConflict(f"cannot {action}: {code}")
        if code in _UNAVAILABLE or status >= 500 or status in (401, 403, 429):
            return base.StoreUnavailable(f"S3 store unavailable, cannot {action}: {code or status}")
        return base.StorageError(f"cannot {action}: {code or status}")
    # Connection refused, timeouts, a response cut off mid-body, no credentials: all mean
    # the store cannot serve the request now.
    return base.StoreUnavailable(f"S3 store unreachable, cannot {action}: {type(exc).__name__}")


@contextmanager
def _s3_errors(action: str, key: str | None = None) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError, OSError) as exc:
        raise _translate(exc, action, key) from exc


def _tagging(tags: Mapping[str, str]) -> str:
    return urllib.parse.urlencode(base.validate_tags(tags))


def _is_code(exc: ClientError, *codes: str) -> bool:
    return _error_code(exc)[0] in codes


# Parsing botocore's service descriptions costs a few hundred milliseconds per session; one
# loader keeps them for the process. Each store still gets its own session, so credentials
# are resolved from the environment as it is when the store is opened.
_SERVICE_MODELS = botocore.loaders.create_loader()


def _new_session() -> boto3.session.Session:
    core = botocore.session.get_session()
    core.register_component("data_loader", _SERVICE_MODELS)
    return boto3.session.Session(botocore_session=core)


@dataclass(frozen=True)
class S3Tuning:
    """Timeouts, retries and read windows of an S3 store.

    The defaults suit production: ``max_attempts`` counts every attempt including the first,
    and botocore's standard mode retries throttling, 5xx answers, timeouts and broken
    connections with exponential backoff and jitter. Tests pass shorter ones to fail fast.
    """

    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    retry_mode: Literal["standard", "adaptive"] = "standard"
    window_size: int = DEFAULT_WINDOW
    max_pool_connections: int = 20


class S3Store:
    """Objects in one bucket, optionally under a key prefix (several vaults may share a bucket).

    ``check`` uses a single attempt with short timeouts, so a health probe answers within
    seconds whatever the ``S3Tuning``.
    """

    # S3 itself refuses smaller parts, so unlike the local store this floor cannot be lowered.
    min_part_size: Final = base.S3_MIN_PART_SIZE

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        tuning: S3Tuning | None = None,
        session: boto3.session.Session | None = None,
    ) -> None:
        tuning = tuning or S3Tuning()
        connect_timeout, read_timeout = tuning.connect_timeout, tuning.read_timeout
        retry_mode, window_size = tuning.retry_mode, tuning.window_size
        if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
            raise ValueError(f"invalid bucket name {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            base.validate_key(prefix)
            if len(prefix) > _MAX_STORE_PREFIX:
                raise ValueError(f"store prefix longer than {_MAX_STORE_PREFIX} characters")
        if window_size < 1:
            raise ValueError("window_size must be >= 1")
        self._bucket = bucket
        self._prefix = f"{prefix}/" if prefix else ""
        self._region = region
        self._window = window_size
        # Lifecycle rules this store owns carry this ID prefix; other rules in the bucket
        # (another prefix's, an operator's) are left untouched.
        self._rule_id = f"vault:{self._prefix}:"
        config = Config(
            region_name=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": tuning.max_attempts, "mode": retry_mode},
            max_pool_connections=tuning.max_pool_connections,
            # Path-style works on every S3-compatible server without wildcard DNS.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = session or _new_session()
        self._client: S3Client = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        # The health check must answer quickly, not after a full retry schedule: one attempt
        # with short timeouts tells a monitor "down" within a few seconds.
        probe_config = config.merge(
            Config(
                connect_timeout=min(connect_timeout, _PROBE_TIMEOUT),
                read_timeout=min(read_timeout, _PROBE_TIMEOUT),
                retries={"total_max_attempts": 1, "mode": retry_mode},
            )
        )
        self._probe: S3Client = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=probe_config
        )

    def __repr__(self) -> str:
        return f"S3Store(bucket={self._bucket!r}, prefix={self._prefix!r})"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def client(self) -> S3Client:
        """The underlying client, for administration outside the port and for tests."""
        return self._client

    def _key(self, key: str) -> str:
        return self._prefix + base.validate_key(key)

    # -- bucket -----------------------------------------------------------------------------

    def check(self) -> None:
        try:
            with _s3_errors(f"reach bucket {self._bucket}"):
                self._probe.head_bucket(Bucket=self._bucket)
        except base.ObjectNotFound:
            raise base.StoreUnavailable(
                f"bucket {self._bucket} does not exist (run ensure_ready)"
            ) from None
        except base.StoreUnavailable:
            raise
        except base.StorageError as exc:
            raise base.StoreUnavailable(str(exc)) from exc

    def versioned(self) -> bool:
        """Whether the bucket keeps versions (enabled now, or suspended with old ones left)."""
        with _s3_errors(f"read versioning of bucket {self._bucket}"):
            status = self._client.get_bucket_versioning(Bucket=self._bucket).get("Status")
        return status in ("Enabled", "Suspended")

    def ensure_ready(self, rules: base.LifecycleRules) -> None:
        self._ensure_bucket()
        versioned = self.versioned()
        current = self._read_rules()
        foreign = [rule for rule in current if not rule.get("ID", "").startswith(self._rule_id)]
        ours = [rule for rule in current if rule.get("ID", "").startswith(self._rule_id)]
        # Noncurrent versions only exist in a versioned bucket; elsewhere the rule is moot.
        effective = rules if versioned else replace(rules, noncurrent_version_days=None)
        desired = self._build_rules(effective)
        if sorted(map(_canonical, ours)) == sorted(map(_canonical, desired)):
            return  # already in place: running init again changes nothing
        merged: list[Any] = [*foreign, *desired]
        with _s3_errors(f"apply lifecycle rules to bucket {self._bucket}"):
            if merged:
                self._client.put_bucket_lifecycle_configuration(
                    Bucket=self._bucket, LifecycleConfiguration={"Rules": merged}
                )
            else:
                self._client.delete_bucket_lifecycle(Bucket=self._bucket)

    def _ensure_bucket(self) -> None:
        try:
            with _s3_errors(f"reach bucket {self._bucket}"):
                self._client.head_bucket(Bucket=self._bucket)
            return
        except base.ObjectNotFound:
            pass
        try:
            with _s3_errors(f"create bucket {self._bucket}"):
                if self._region == "us-east-1":
                    self._client.create_bucket(Bucket=self._bucket)
                else:
                    self._client.create_bucket(
                        Bucket=self._bucket,
                        CreateBucketConfiguration={"LocationConstraint": self._region},  # type: ignore[typeddict-item]
                    )
        except base.StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _is_code(cause, "BucketAlreadyOwnedByYou"):
                return  # created concurrently by another init
            raise

    def _read_rules(self) -> list[LifecycleRuleOutputTypeDef]:
        try:
            with _s3_errors(f"read lifecycle rules of bucket {self._bucket}"):
                response = self._client.get_bucket_lifecycle_configuration(Bucket=self._bucket)
        except base.StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _is_code(cause, "NoSuchLifecycleConfiguration"):
                return []
            raise
        return list(response.get("Rules", []))

    def _scope(self, tag: tuple[str, str] | None = None) -> dict[str, Any]:
        if tag is None:
            return {"Prefix": self._prefix}
        tag_filter = {"Key": tag[0], "Value": tag[1]}
        if self._prefix:
            return {"And": {"Prefix": self._prefix, "Tags": [tag_filter]}}
        return {"Tag": tag_filter}

    def _rule(
        self, kind: str, action: Mapping[str, object], tag: tuple[str, str] | None = None
    ) -> LifecycleRuleTypeDef:
        """An enabled rule of this store.

        The ID tells it apart from other rules in the bucket; the filter keeps it off the
        objects of other prefixes.
        """
        rule = {"ID": self._rule_id + kind, "Status": "Enabled", "Filter": self._scope(tag)}
        return cast("LifecycleRuleTypeDef", rule | dict(action))

    def _build_rules(self, rules: base.LifecycleRules) -> list[LifecycleRuleTypeDef]:
        built: list[LifecycleRuleTypeDef] = []
        for year in rules.years:
            # S3 expiry dates are midnights UTC; the object must survive its whole last day.
            expires = datetime.combine(year.retain_until + timedelta(days=1), time(), UTC)
            tag = (_SCHOOL_YEAR_TAG, year.school_year)
            built.append(
                self._rule(f"year:{year.school_year}", {"Expiration": {"Date": expires}}, tag)
            )
        if rules.abort_incomplete_after_days is not None:
            after = {"DaysAfterInitiation": rules.abort_incomplete_after_days}
            built.append(self._rule("abort-incomplete", {"AbortIncompleteMultipartUpload": after}))
        if rules.noncurrent_version_days is not None:
            after = {"NoncurrentDays": rules.noncurrent_version_days}
            built.append(self._rule("noncurrent-versions", {"NoncurrentVersionExpiration": after}))
        return built

    def _parse_rules(self, rules: Sequence[LifecycleRuleOutputTypeDef]) -> base.LifecycleRules:
        years: list[base.YearExpiry] = []
        abort_days: int | None = None
        noncurrent_days: int | None = None
        for rule in rules:
            rule_id = rule.get("ID", "")
            if not rule_id.startswith(self._rule_id) or rule.get("Status") != "Enabled":
                continue
            kind = rule_id[len(self._rule_id) :]
            if kind.startswith("year:") and "Date" in rule.get("Expiration", {}):
                expires = rule["Expiration"]["Date"]
                retain_until = expires.astimezone(UTC).date() - timedelta(days=1)
                years.append(base.YearExpiry(kind.removeprefix("year:"), retain_until))
            elif kind == "abort-incomplete":
                abort_days = rule.get("AbortIncompleteMultipartUpload", {}).get(
                    "DaysAfterInitiation"
                )
            elif kind == "noncurrent-versions":
                noncurrent_days = rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
        return base.LifecycleRules(
            years=tuple(years),
            abort_incomplete_after_days=abort_days,
            noncurrent_version_days=noncurrent_days,
        )

    def get_lifecycle_rules(self) -> base.LifecycleRules:
        return self._parse_rules(self._read_rules())

    # -- writes -----------------------------------------------------------------------------

    def put(self, key: str, data: bytes, tags: Mapping[str, str]) -> None:
        full = self._key(key)
        tagging = _tagging(tags)
        with _s3_errors(f"write {key!r}"):
            self._client.put_object(Bucket=self._bucket, Key=full, Body=data, Tagging=tagging)

    def start_multipart(self, key: str, tags: Mapping[str, str]) -> str:
        full = self._key(key)
        tagging = _tagging(tags)
        with _s3_errors(f"start a multipart write of {key!r}"):
            response = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=full, Tagging=tagging
            )
        return response["UploadId"]

    def put_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> base.Part:
        base.check_part_number(part_number)
        full = self._key(key)
        with _s3_errors(f"write part {part_number} of {key!r}"):
            response = self._client.upload_part(
                Bucket=self._bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=part_number,
                Body=data,
            )
        return base.Part(number=part_number, etag=response["ETag"], size=len(data))

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[base.Part]) -> None:
        base.check_parts(parts, self.min_part_size)
        full = self._key(key)
        with _s3_errors(f"complete the multipart write of {key!r}"):
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": part.number, "ETag": part.etag} for part in parts]
                },
            )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        full = self._key(key)
        try:
            with _s3_errors(f"abort multipart write of {key!r}"):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=full, UploadId=upload_id
                )
        except base.StorageConflict as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _is_code(cause, "NoSuchUpload"):
                return  # already aborted, completed or expired: aborting is idempotent
            raise

    def list_stale_multipart(self, older_than: datetime) -> list[base.PendingWrite]:
        base.check_cutoff(older_than)
        stale: list[base.PendingWrite] = []
        with _s3_errors("list pending multipart writes"):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self._bucket, Prefix=self._prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    full = upload.get("Key", "")
                    started = upload.get("Initiated")
                    upload_id = upload.get("UploadId")
                    if started is None or upload_id is None or not full.startswith(self._prefix):
                        continue
                    key = full[len(self._prefix) :]
                    if started.astimezone(UTC) < older_than:
                        stale.append(base.PendingWrite(key, upload_id, started.astimezone(UTC)))
        return stale

    # -- reads ------------------------------------------------------------------------------

    def read_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        base.check_range(start, end)
        full = self._key(key)
        if end == start:
            self.head(key)  # an empty range still reports a missing object
            return iter(())
        first_stop = start + self._window if end is None else min(end, start + self._window)
        try:
            with _s3_errors(f"read {key!r}", key):
                response = self._client.get_object(
                    Bucket=self._bucket, Key=full, Range=f"bytes={start}-{first_stop - 1}"
                )
        except base.StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _is_code(cause, "InvalidRange"):
                self.head(key)  # the start lies past the end (or the object is empty)
                return iter(())
            raise
        total = _total_size(response.get("ContentRange", ""))
        stop = total if end is None else min(end, total)
        return self._stream(
            key, full, response["Body"], etag=response.get("ETag", ""), start=start, stop=stop
        )

    def _stream(
        self, key: str, full: str, body: StreamingBody, *, etag: str, start: int, stop: int
    ) -> Iterator[bytes]:
        """Yield ``start..stop`` window by window, the first window's body already open.

        Later windows are pinned to the first response's ETag, so a read never stitches
        together two different objects written under the same key.
        """
        position = start
        resumes = 0
        current: StreamingBody | None = body
        try:
            while position < stop:
                if current is None:
                    window_stop = min(stop, position + self._window)
                    with _s3_errors(f"read {key!r}", key):
                        current = self._client.get_object(
                            Bucket=self._bucket,
                            Key=full,
                            Range=f"bytes={position}-{window_stop - 1}",
                            IfMatch=etag,
                        )["Body"]
                window_start = position
                try:
                    for chunk in current.iter_chunks(_CHUNK):
                        take = chunk[: stop - position]
                        position += len(take)
                        yield take
                        if position >= stop:
                            break
                except (BotoCoreError, OSError) as exc:
                    # The connection broke mid-body. Resume from the last byte delivered; a
                    # server that stays down turns into StoreUnavailable on the next GET.
                    if resumes >= _RESUMES:
                        raise _translate(exc, f"read {key!r}", key) from exc
                    resumes += 1
                else:
                    if position == window_start:
                        # A window that delivers nothing would otherwise be asked for forever.
                        raise base.StorageError(
                            f"S3 sent an empty window for {key!r} at {position}"
                        )
                finally:
                    current.close()
                current = None
        finally:
            if current is not None:
                current.close()

    def head(self, key: str) -> base.ObjectInfo:
        full = self._key(key)
        with _s3_errors(f"read {key!r}", key):
            size = self._client.head_object(Bucket=self._bucket, Key=full)["ContentLength"]
            tag_set = self._client.get_object_tagging(Bucket=self._bucket, Key=full)["TagSet"]
        return base.ObjectInfo(size=size, tags={tag["Key"]: tag["Value"] for tag in tag_set})

    def get_tags(self, key: str) -> dict[str, str]:
        full = self._key(key)
        with _s3_errors(f"read the tags of {key!r}", key):
            tag_set = self._client.get_object_tagging(Bucket=self._bucket, Key=full)["TagSet"]
        return {tag["Key"]: tag["Value"] for tag in tag_set}

    def set_tags(self, key: str, tags: Mapping[str, str]) -> None:
        full = self._key(key)
        tag_set = [
            {"Key": name, "Value": value} for name, value in base.validate_tags(tags).items()
        ]
        with _s3_errors(f"write the tags of {key!r}", key):
            self._client.put_object_tagging(
                Bucket=self._bucket,
                Key=full,
                Tagging={"TagSet": tag_set},  # type: ignore[typeddict-item]
            )

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        base.validate_prefix(prefix)
        return self._iter_keys(prefix)

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        with _s3_errors("list keys"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._prefix + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    full = item.get("Key", "")
                    if full.startswith(self._prefix):
                        yield full[len(self._prefix) :]

    # -- delete -----------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        full = self._key(key)
        if not self.versioned():
            with _s3_errors(f"delete {key!r}"):
                self._client.delete_object(Bucket=self._bucket, Key=full)
            return
        # A plain DELETE on a versioned bucket only adds a delete marker and keeps every byte;
        # erasure means removing each version and marker by id.
        with _s3_errors(f"delete {key!r}"):
            pages = self._client.get_paginator("list_object_versions").paginate(
                Bucket=self._bucket, Prefix=full
            )
            targets: list[dict[str, str]] = []
            for page in pages:
                for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if entry.get("Key") == full and "VersionId" in entry:
                        targets.append({"Key": full, "VersionId": entry["VersionId"]})
            for batch_start in range(0, len(targets), _DELETE_BATCH):
                batch = targets[batch_start : batch_start + _DELETE_BATCH]
                response = self._client.delete_objects(
                    Bucket=self._bucket,
                    Delete={"Objects": batch, "Quiet": True},  # type: ignore[typeddict-item]
                )
                errors = response.get("Errors", [])
                if errors:
                    raise base.StorageError(
                        f"cannot delete {len(errors)} version(s) of {key!r}: "
                        f"{errors[0].get('Code', 'unknown error')}"
                    )


def _canonical(rule: Mapping[str, Any]) -> str:
    """A rule as comparable text, so an unchanged configuration is not written again."""
    subset = {name: rule.get(name) for name in _RULE_FIELDS}

    def plain(value: object) -> str:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        raise TypeError(type(value).__name__)

    return json.dumps(subset, sort_keys=True, default=plain)


def _total_size(content_range: str) -> int:
    # "bytes 0-8388607/12345678": the part after the slash is the object's full size.
    _, _, total = content_range.rpartition("/")
    if not total.isdigit():
        raise base.StorageError(
            f"S3 answered a ranged GET without a usable Content-Range: {total!r}"
        )
    return int(total)
