"""A BlobStore in a local directory: the embedded default for a single machine.

Layout under the root (every directory 0700, every file 0600, so other local accounts cannot
even list which recordings exist)::

    objects/<key>             the ciphertext of each object
    tags/<key>                its tags, as JSON
    uploads/<id>/upload.json  a pending multipart write: key, tags, start time
    uploads/<id>/NNNNN.part   its parts (ciphertext only, like everything here)
    tmp/                      files being written; never read back under their temp name
    lifecycle.json            the lifecycle rules recorded by ensure_ready

Every write goes to a temp file in ``tmp/`` (same filesystem), is fsynced, renamed over its
target and the target's directory is fsynced, so a crash or a full disk leaves either the old
state or the new one, never a truncated object. Keys are validated and every path is checked
to stay inside the root without passing through a symlink, so a crafted key or a planted
symlink cannot make the vault read or overwrite files elsewhere.

One difference from S3 is deliberate: keys map to paths, so ``a`` and ``a/b`` cannot both be
objects (the second write is a StorageConflict). The vault's keys never nest that way.

Lifecycle rules are recorded, not enforced: a directory has no expiry engine and no versions.
The vault's own lifecycle run (crypto-shredding a year, aborting stale writes found by
``list_stale_multipart``) is what removes data on this backend.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

from storage_backends import base

__all__ = ["LocalStore"]

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_READ_CHUNK = 1024 * 1024
_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
_UPLOAD_META = "upload.json"
_LIFECYCLE = "lifecycle.json"
_TMP_MAX_AGE = 24 * 3600

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_UNAVAILABLE = frozenset({errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.ENOMEM})
_COLLISION = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY})


def _translate(exc: OSError, action: str) -> base.StorageError:
    """Turn an OSError into the port's language, keeping the cause chained for operators."""
    code = exc.errno
    if code in _FULL:
        return base.StoreUnavailable(f"local store is full: cannot {action} ({exc.strerror})")
    if code in _UNAVAILABLE:
        return base.StoreUnavailable(f"local store refused to {action} ({exc.strerror})")
    if code == errno.ELOOP:
        return base.StorageConflict(f"refusing to {action}: path contains a symlink")
    if code in _COLLISION:
        return base.StorageConflict(f"cannot {action}: key collides with a directory or file")
    if code == errno.ENOENT:
        return base.StoreUnavailable(f"cannot {action}: store directory missing (run ensure_ready)")
    return base.StorageError(f"cannot {action} ({exc.strerror or exc})")


@contextmanager
def _os_errors(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _translate(exc, action) from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    # Makes a rename or unlink durable: without it a crash can forget the directory entry
    # even though the file's data was fsynced.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path, what: str) -> dict[str, Any] | None:
    """A JSON object written by this store, or None if the file does not exist.

    Never follows a symlink. A file that is not a JSON object was not written by this store
    (every write is atomic), so it is reported as damage instead of being trusted.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _translate(exc, f"read {what}") from exc
    with os.fdopen(fd, "rb") as handle, _os_errors(f"read {what}"):
        raw = handle.read()
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise base.StorageError(f"{what} in the local store is damaged: {path}")
    return data


def _unlink_quietly(path: Path) -> None:
    with suppress(OSError):
        path.unlink()


class LocalStore:
    """Objects as files under ``root``. Several processes may share one root."""

    def __init__(self, root: Path | str, *, min_part_size: int = base.S3_MIN_PART_SIZE) -> None:
        # The same part-size floor as S3 by default, so an upload flow that works on a laptop
        # cannot fail only in production; tests may lower it.
        if min_part_size < 1:
            raise ValueError("min_part_size must be >= 1")
        self.min_part_size: Final = min_part_size
        # Resolved once: the root itself may legitimately be a symlink (e.g. to a data disk);
        # below it, no symlink is ever followed.
        self._root = Path(os.path.realpath(os.path.abspath(root)))
        self._objects = self._root / "objects"
        self._tags = self._root / "tags"
        self._uploads = self._root / "uploads"
        self._tmp = self._root / "tmp"
        self._lifecycle = self._root / _LIFECYCLE

    def __repr__(self) -> str:
        return f"LocalStore({str(self._root)!r})"

    @property
    def root(self) -> Path:
        return self._root

    # -- paths ------------------------------------------------------------------------------

    def _contained(self, tree: Path, key: str) -> Path:
        """The path of ``key`` under ``tree``, refusing any that would leave it.

        ``validate_key`` already rules out ``..``, absolute keys and odd characters. The
        realpath comparison adds the check that no existing component is a symlink, which is
        how a planted link (``objects/2025-2026 -> /etc``) would otherwise redirect a write.
        Final components are opened with O_NOFOLLOW as well, which closes the window between
        this check and the open for the last hop.
        """
        path = tree / base.validate_key(key)
        resolved = os.path.realpath(path)
        if resolved != str(path) or not resolved.startswith(str(tree) + os.sep):
            raise base.StorageConflict(f"storage path for {key!r} escapes the store root")
        return path

    def _make_parents(self, tree: Path, path: Path) -> None:
        """Create the missing directories between ``tree`` and ``path`` with mode 0700."""
        missing: list[Path] = []
        parent = path.parent
        while parent != tree and not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            try:
                os.mkdir(directory, _DIR_MODE)
            except FileExistsError:
                pass  # another process created it at the same moment
            else:
                os.chmod(directory, _DIR_MODE)  # umask must not widen or narrow it
                _fsync_dir(directory.parent)
        # Re-check after creation: a racing process could have put a symlink there.
        if os.path.realpath(path.parent) != str(path.parent):
            raise base.StorageConflict("storage path escapes the store root")

    def _upload_dir(self, upload_id: str) -> Path:
        # Upload ids come back from the caller (the database); they must not smuggle a path.
        if not isinstance(upload_id, str) or not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise base.StorageConflict(f"unknown upload id {upload_id!r}")
        return self._uploads / upload_id

    # -- atomic writes ----------------------------------------------------------------------

    def _stage(self, chunks: Iterable[bytes]) -> Path:
        """Write ``chunks`` to a fresh fsynced temp file in ``tmp/``; remove it on any error."""
        path = self._tmp / f"{secrets.token_hex(16)}.tmp"
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE
        )
        try:
            try:
                os.fchmod(fd, _FILE_MODE)
                for chunk in chunks:
                    _write_all(fd, chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            _unlink_quietly(path)
            raise
        return path

    def _commit(self, moves: Sequence[tuple[Path, Path, Path]]) -> None:
        """Rename staged files onto their targets, in order, and make the renames durable.

        Each move is (temp file, tree, target). Temp files not yet renamed are removed on
        error, so a failure leaves no temporary file behind.
        """
        pending = [temp for temp, _, _ in moves]
        try:
            for temp, tree, target in moves:
                self._make_parents(tree, target)
                os.replace(temp, target)
                pending.remove(temp)
            for directory in {target.parent for _, _, target in moves}:
                _fsync_dir(directory)
        finally:
            for temp in pending:
                _unlink_quietly(temp)

    def _write_object(self, key: str, chunks: Iterable[bytes], tags: Mapping[str, str]) -> None:
        target = self._contained(self._objects, key)
        tags_target = self._contained(self._tags, key)
        body = json.dumps(dict(tags), sort_keys=True).encode()
        staged: list[Path] = []
        try:
            staged.append(self._stage(chunks))
            staged.append(self._stage([body]))
            # Tags first: the object must never be visible without the tags that lifecycle
            # and fsck rely on.
            self._commit([(staged[1], self._tags, tags_target), (staged[0], self._objects, target)])
        except BaseException:
            for temp in staged:
                _unlink_quietly(temp)
            raise

    def _write_json(self, target: Path, tree: Path, data: object) -> None:
        temp = self._stage([json.dumps(data, sort_keys=True).encode()])
        self._commit([(temp, tree, target)])

    # -- BlobStore --------------------------------------------------------------------------

    def check(self) -> None:
        for directory in (self._root, self._objects, self._tags, self._uploads, self._tmp):
            try:
                info = os.lstat(directory)
            except OSError as exc:
                raise base.StoreUnavailable(
                    f"local store directory {directory} is missing (run ensure_ready)"
                ) from exc
            if not stat.S_ISDIR(info.st_mode):
                raise base.StoreUnavailable(f"{directory} is not a directory")
            if not os.access(directory, os.W_OK | os.X_OK):
                raise base.StoreUnavailable(f"local store directory {directory} is not writable")

    def ensure_ready(self, rules: base.LifecycleRules) -> None:
        with _os_errors("create the store directories"):
            os.makedirs(self._root, mode=_DIR_MODE, exist_ok=True)
            for directory in (self._root, self._objects, self._tags, self._uploads, self._tmp):
                with suppress(FileExistsError):
                    os.mkdir(directory, _DIR_MODE)
                if directory.is_symlink():
                    raise base.StorageConflict(f"{directory} must not be a symlink")
                # Tighten an operator-made directory too: the listing itself is sensitive.
                os.chmod(directory, _DIR_MODE)
            # No versions here, so a noncurrent-version rule cannot apply.
            effective = replace(rules, noncurrent_version_days=None)
            if self.get_lifecycle_rules() != effective:
                self._write_json(self._lifecycle, self._root, _rules_to_json(effective))
            self._sweep_tmp()

    def _sweep_tmp(self) -> None:
        """Remove what a crashed process left in ``tmp/`` (ciphertext nothing refers to).

        Only entries older than a day go, so a write in progress is never touched.
        """
        cutoff = time.time() - _TMP_MAX_AGE
        with os.scandir(self._tmp) as entries:
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                        continue
                except FileNotFoundError:
                    continue  # finished by its writer while we looked
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    _unlink_quietly(Path(entry.path))

    def get_lifecycle_rules(self) -> base.LifecycleRules:
        data = _read_json(self._lifecycle, "the lifecycle rules")
        if data is None:
            return base.LifecycleRules(
                abort_incomplete_after_days=None, noncurrent_version_days=None
            )
        try:
            return _rules_from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise base.StorageError(
                f"the lifecycle rules in the local store are damaged: {exc}"
            ) from exc

    def put(self, key: str, data: bytes, tags: Mapping[str, str]) -> None:
        checked = base.validate_tags(tags)
        with _os_errors(f"write {key!r}"):
            self._write_object(key, [data], checked)

    def start_multipart(self, key: str, tags: Mapping[str, str]) -> str:
        base.validate_key(key)
        checked = base.validate_tags(tags)
        upload_id = secrets.token_hex(16)
        meta = {"key": key, "tags": checked, "started": datetime.now(UTC).isoformat()}
        with _os_errors(f"start a multipart write of {key!r}"):
            # Built in tmp/ and renamed in whole, so uploads/ never holds a half-made entry.
            staging = self._tmp / f"{upload_id}.upload"
            os.mkdir(staging, _DIR_MODE)
            try:
                os.chmod(staging, _DIR_MODE)
                temp = self._stage([json.dumps(meta, sort_keys=True).encode()])
                os.replace(temp, staging / _UPLOAD_META)
                _fsync_dir(staging)
                os.rename(staging, self._uploads / upload_id)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _fsync_dir(self._uploads)
        return upload_id

    def _load_upload(self, key: str, upload_id: str) -> tuple[Path, dict[str, Any]]:
        base.validate_key(key)
        directory = self._upload_dir(upload_id)
        meta = _read_json(directory / _UPLOAD_META, f"multipart write {upload_id}")
        if meta is None:
            raise base.StorageConflict(
                f"multipart write {upload_id} does not exist (aborted, completed or expired)"
            )
        if meta.get("key") != key:
            raise base.StorageConflict(f"multipart write {upload_id} belongs to another key")
        return directory, meta

    def put_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> base.Part:
        base.check_part_number(part_number)
        directory, _ = self._load_upload(key, upload_id)
        etag = hashlib.sha256(data).hexdigest()
        with _os_errors(f"write part {part_number} of {key!r}"):
            temp = self._stage([data])
            try:
                os.replace(temp, directory / f"{part_number:05d}.part")
            except FileNotFoundError:
                _unlink_quietly(temp)
                raise base.StorageConflict(
                    f"multipart write {upload_id} was aborted while a part was written"
                ) from None
            except BaseException:
                _unlink_quietly(temp)
                raise
            _fsync_dir(directory)
        return base.Part(number=part_number, etag=etag, size=len(data))

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[base.Part]) -> None:
        base.check_parts(parts, self.min_part_size)
        directory, meta = self._load_upload(key, upload_id)
        raw_tags = meta.get("tags")
        tags = base.validate_tags(raw_tags if isinstance(raw_tags, dict) else {})
        with _os_errors(f"complete the multipart write of {key!r}"):
            self._write_object(key, self._verified_parts(directory, parts), tags)
        # The object is complete and visible; leftover parts are only ciphertext and show up
        # as a stale write for the next cleanup, so failing to remove them is not an error.
        with suppress(OSError):
            self._discard_upload(directory)

    def _verified_parts(self, directory: Path, parts: Sequence[base.Part]) -> Iterator[bytes]:
        """Stream the part files, checking each against what ``put_part`` returned."""
        for part in parts:
            digest = hashlib.sha256()
            size = 0
            try:
                with (directory / f"{part.number:05d}.part").open("rb") as handle:
                    while chunk := handle.read(_READ_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        yield chunk
            except FileNotFoundError:
                raise base.StorageConflict(f"part {part.number} was never uploaded") from None
            if size != part.size or digest.hexdigest() != part.etag:
                raise base.StorageConflict(f"part {part.number} does not match the uploaded part")

    def _discard_upload(self, directory: Path) -> None:
        # Renamed out of uploads/ first, so a listing never sees a half-deleted upload.
        graveyard = self._tmp / f"{directory.name}.discard"
        try:
            os.rename(directory, graveyard)
        except FileNotFoundError:
            return
        _fsync_dir(self._uploads)
        shutil.rmtree(graveyard, ignore_errors=True)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        base.validate_key(key)
        directory = self._upload_dir(upload_id)
        meta = _read_json(directory / _UPLOAD_META, f"multipart write {upload_id}")
        if meta is None:
            return  # already aborted or completed: aborting is idempotent
        if meta.get("key") != key:
            raise base.StorageConflict(f"multipart write {upload_id} belongs to another key")
        with _os_errors(f"abort multipart write {upload_id}"):
            self._discard_upload(directory)

    def list_stale_multipart(self, older_than: datetime) -> list[base.PendingWrite]:
        base.check_cutoff(older_than)
        stale: list[base.PendingWrite] = []
        with _os_errors("list pending multipart writes"):
            entries = sorted(os.scandir(self._uploads), key=lambda entry: entry.name)
        for entry in entries:
            if not _UPLOAD_ID_RE.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            meta = _read_json(Path(entry.path, _UPLOAD_META), f"multipart write {entry.name}")
            if meta is None:
                continue  # completed or aborted while listing
            try:
                started = datetime.fromisoformat(meta["started"])
                key = base.validate_key(meta["key"])
            except (KeyError, TypeError, ValueError) as exc:
                raise base.StorageError(f"multipart write {entry.name} is damaged") from exc
            if started < older_than:
                stale.append(base.PendingWrite(key=key, upload_id=entry.name, started=started))
        return stale

    def _open_object(self, key: str) -> tuple[BinaryIO, int]:
        path = self._contained(self._objects, key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise base.ObjectNotFound(key) from None
        except OSError as exc:
            raise _translate(exc, f"read {key!r}") from exc
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise base.ObjectNotFound(key)  # a directory of other keys, not an object
            if not stat.S_ISREG(info.st_mode):
                raise base.StorageConflict(f"{key!r} is not a regular file")
            handle = os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise
        return handle, info.st_size

    def read_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        base.check_range(start, end)
        # Opened now, not on first iteration, so a missing object is reported before the
        # caller commits to a response; the file object closes itself if never iterated.
        handle, size = self._open_object(key)
        stop = size if end is None else min(end, size)
        return self._stream(handle, key, start, stop)

    @staticmethod
    def _stream(handle: BinaryIO, key: str, start: int, stop: int) -> Iterator[bytes]:
        with handle, _os_errors(f"read {key!r}"):
            handle.seek(start)
            remaining = stop - start
            while remaining > 0:
                chunk = handle.read(min(_READ_CHUNK, remaining))
                if not chunk:
                    raise base.StorageError(f"{key!r} is shorter than when it was opened")
                remaining -= len(chunk)
                yield chunk

    def head(self, key: str) -> base.ObjectInfo:
        handle, size = self._open_object(key)
        handle.close()
        return base.ObjectInfo(size=size, tags=self._read_tags(key))

    def _read_tags(self, key: str) -> dict[str, str]:
        raw = _read_json(self._contained(self._tags, key), f"the tags of {key!r}")
        return {} if raw is None else {str(name): str(value) for name, value in raw.items()}

    def delete(self, key: str) -> None:
        # Object first, so the key stops being visible before its tags go.
        for tree in (self._objects, self._tags):
            path = self._contained(tree, key)
            try:
                info = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise _translate(exc, f"delete {key!r}") from exc
            if stat.S_ISDIR(info.st_mode):
                continue  # a directory of other keys, not an object
            with _os_errors(f"delete {key!r}"):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue  # deleted concurrently: the outcome is the same
                _fsync_dir(path.parent)

    def set_tags(self, key: str, tags: Mapping[str, str]) -> None:
        checked = base.validate_tags(tags)
        self.head(key)  # raises ObjectNotFound
        target = self._contained(self._tags, key)
        with _os_errors(f"write the tags of {key!r}"):
            self._write_json(target, self._tags, checked)

    def get_tags(self, key: str) -> dict[str, str]:
        return self.head(key).tags

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        base.validate_prefix(prefix)
        if not self._objects.is_dir():
            # A wrong or missing root must not look like an empty store to fsck.
            raise base.StoreUnavailable(f"{self._objects} is missing (run ensure_ready)")
        # Start from the deepest directory the prefix names, instead of walking everything.
        directory, _, _ = prefix.rpartition("/")
        start = self._objects / directory if directory else self._objects
        if os.path.realpath(start) != str(start):
            return iter(())  # a symlink is never a key, nor a way into another tree
        parent = f"{directory}/" if directory else ""
        return self._walk(start, parent, prefix)

    def _walk(self, directory: Path, parent: str, prefix: str) -> Iterator[str]:
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise _translate(exc, "list keys") from exc

        # A directory sorts as "name/" so the walk yields keys in plain byte order, as AWS
        # lists them ("a.b" < "a/b" because "." < "/"), which keeps fsck output stable.
        def order(entry: os.DirEntry[str]) -> str:
            return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name

        for entry in sorted(entries, key=order):
            key = parent + entry.name
            if entry.is_dir(follow_symlinks=False):
                # Only descend where keys with the prefix can be.
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(Path(entry.path), key + "/", prefix)
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                # Symlinks and other special files are never keys.
                yield key


def _rules_to_json(rules: base.LifecycleRules) -> dict[str, object]:
    return {
        "years": [
            {"school_year": year.school_year, "retain_until": year.retain_until.isoformat()}
            for year in rules.years
        ],
        "abort_incomplete_after_days": rules.abort_incomplete_after_days,
        "noncurrent_version_days": rules.noncurrent_version_days,
    }


def _rules_from_json(data: dict[str, object]) -> base.LifecycleRules:
    def days(name: str) -> int | None:
        value = data.get(name)
        return value if isinstance(value, int) else None

    years = data.get("years")
    return base.LifecycleRules(
        years=tuple(
            base.YearExpiry(str(item["school_year"]), date.fromisoformat(str(item["retain_until"])))
            for item in (years if isinstance(years, list) else [])
        ),
        abort_incomplete_after_days=days("abort_incomplete_after_days"),
        noncurrent_version_days=days("noncurrent_version_days"),
    )
