"""Where a job's input is read and its output written: plain paths, or URLs through fsspec.

A plain path (``/data/in``, ``in/*.txt``) is the local (or a shared) file system and goes
through :mod:`os` exactly as it always did: nothing here is imported or called on the hot
path for it.  A URL (``s3://bucket/prefix``, ``gs://...``, ``az://...``, any protocol
fsspec knows) goes through fsspec and the implementation of its protocol (s3fs for S3,
installed with the package; ``gcsfs`` and ``adlfs`` for the others, installed by the
user).  ``file://PATH`` is the plain path ``PATH``.

Credentials and endpoints come from each store's own environment (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``...)
and from ``--storage-option KEY=VALUE`` (keyword arguments of the protocol's file
system: for s3fs ``key``, ``secret``, ``endpoint_url``, ``anon``...).  Their values travel
in the :class:`~mapreduce.core.spec.JobSpec` (to the master and the workers, over the
authenticated channel) and are never printed, logged, shown on a status page or written to
``_summary.json``: only their keys are.

Map output never comes here: it stays on the workers' local disks.  Only input splits
(ranged reads, no whole-file download) and the final output do.  The output commit on a
store is :class:`mapreduce.dataflow.store_commit.StoreCommitter`.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import posixpath
import re
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, TypeVar, cast

from mapreduce.errors import InputError, MapReduceError, UsageError

__all__ = [
    "COMPRESSED_SUFFIXES",
    "StoreError",
    "is_compressed",
    "is_url",
    "normalize",
    "open_input",
    "open_raw",
]

#: Files with these endings are decompressed as they are read (and so cannot be split).
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst")
#: How many bytes a store read fetches beyond what was asked (fsspec's read-ahead cache).
READ_AHEAD_BYTES = 1 << 20
#: Transient store errors are retried this many times, with backoff up to RETRY_MAX_SECONDS.
RETRIES = 5
RETRY_MAX_SECONDS = 8.0

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)

T = TypeVar("T")


class StoreError(MapReduceError):
    """A store refused or failed an operation for good; the message names the URL."""


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL of a file system other than the local one."""
    match = _URL.match(path)
    return match is not None and match.group(1).lower() != "file"


def is_compressed(path: str) -> bool:
    return path.endswith(COMPRESSED_SUFFIXES)


def normalize(path: str) -> str:
    """A plain path as it is (``file://PATH`` as ``PATH``); a URL without trailing ``/``,
    empty or ``.`` parts, its protocol in lower case.

    Raises:
        UsageError: the URL holds credentials (``user:password@``), ``..`` or nothing
            after the protocol.
    """
    match = _URL.match(path)
    if match is None:
        return path
    protocol, rest = match.group(1).lower(), match.group(2)
    if protocol == "file":
        return rest or "/"
    bucket, _, key = rest.partition("/")
    if "@" in bucket:
        raise UsageError(
            f"{protocol}://...@...: credentials in a URL are not accepted; use the store's "
            "environment variables or --storage-option"
        )
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if not bucket or ".." in parts or "\0" in rest:
        raise UsageError(f"{path!r} is not a usable URL ({protocol}://BUCKET/PATH, no '..')")
    return f"{protocol}://" + "/".join([bucket, *parts])


def join(url: str, *names: str) -> str:
    return posixpath.join(url, *names)


def option_values(options: Mapping[str, str]) -> dict[str, Any]:
    """``--storage-option`` values as keyword arguments: ``true``, ``false``, numbers and
    JSON objects as such, anything else as the string it is."""
    values: dict[str, Any] = {}
    for key, text in options.items():
        try:
            value = json.loads(text.lower() if text in ("True", "False") else text)
        except ValueError:
            value = text
        values[key] = value if isinstance(value, (bool, int, float, dict, list)) else text
    return values


# -- file systems ----------------------------------------------------------------------


def _filesystem(protocol: str, options: tuple[tuple[str, str], ...]) -> Any:
    # fsspec keeps one instance per protocol and arguments, made again in a forked child
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise UsageError(f"{protocol}:// needs fsspec: {exc}") from exc
    kwargs = option_values(dict(options))
    if protocol in ("s3", "s3a"):
        # bounded retries with backoff for throttling, 5xx and dropped connections
        config = dict(kwargs.pop("config_kwargs", None) or {})
        config.setdefault("retries", {"max_attempts": RETRIES + 1, "mode": "standard"})
        kwargs["config_kwargs"] = config
    try:
        return fsspec.filesystem(protocol, **kwargs)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"{protocol}:// cannot be used here: {exc}") from exc
    except TypeError as exc:
        names = ", ".join(sorted(dict(options)))
        raise UsageError(f"--storage-option {names}: not accepted by {protocol}://: {exc}") from exc


def filesystem(url: str, options: Mapping[str, str]) -> tuple[Any, str]:
    """The fsspec file system of ``url`` (one per protocol and options in a process) and the
    path in it (``bucket/key``).

    Raises:
        UsageError: the protocol's implementation is not installed, or an option is not
            one of its arguments.
    """
    match = _URL.match(url)
    if match is None:
        raise ValueError(f"not a URL: {url!r}")
    protocol = match.group(1).lower()
    fs = _filesystem(protocol, tuple(sorted(options.items())))
    return fs, match.group(2).rstrip("/")


def url_of(url: str, path: str) -> str:
    """The URL of ``path`` (a path of ``url``'s file system)."""
    protocol = url.split("://", 1)[0].lower()
    return f"{protocol}://{path.lstrip('/')}"


# -- errors and retries ----------------------------------------------------------------

_TRANSIENT_ERRNOS = frozenset(
    {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE}
)
_TRANSIENT_WORDS = (
    "slowdown",
    "slow down",
    "throttl",
    "toomanyrequests",
    "too many requests",
    "requesttimeout",
    "internalerror",
    "serviceunavailable",
    "service unavailable",
    "503",
    "500",
    "502",
    "504",
    "connection reset",
    "connection aborted",
    "server disconnected",
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a store error worth trying again: throttling, a 5xx answer, a
    connection reset or a time-out.  A missing bucket, missing credentials or a denied
    permission are not."""
    if isinstance(exc, (PermissionError, FileNotFoundError, FileExistsError, IsADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoSuchBucket"):
        return False
    if name in ("EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError"):
        return True
    text = f"{name} {exc}".lower()
    return any(word in text for word in _TRANSIENT_WORDS)


def retried(
    op: Callable[[], T], *, retries: int = RETRIES, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``op()``, tried again up to ``retries`` times (jittered exponential backoff, at most
    :data:`RETRY_MAX_SECONDS` a wait) while it fails with a transient error."""
    for attempt in range(retries + 1):
        try:
            return op()
        except Exception as exc:
            if attempt >= retries or not is_transient(exc):
                raise
            import random  # (here: it costs a plain-path run's start-up a few ms)

            sleep(min(RETRY_MAX_SECONDS, 0.1 * 2**attempt) * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")  # pragma: no cover


def describe(exc: BaseException, url: str) -> str:
    """One line saying what went wrong with ``url``, never with a credential in it."""
    name = type(exc).__name__
    text = str(exc)
    if name in ("NoCredentialsError", "PartialCredentialsError") or "credentials" in text.lower():
        return (
            f"{url}: no credentials for the store (set its environment, for S3 "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --storage-option)"
        )
    if "bucket does not exist" in text.lower() or name == "NoSuchBucket":
        return f"{url}: the bucket does not exist"
    if isinstance(exc, PermissionError):
        return f"{url}: access denied ({text})"
    if isinstance(exc, FileNotFoundError):
        return f"{url}: not found"
    if isinstance(exc, TypeError) and "unexpected keyword argument" in text:
        name = text.rsplit("argument", 1)[1].strip(" '\"")
        return f"{url}: --storage-option {name} is not an option of {url.split('://')[0]}://"
    return f"{url}: {name}: {text}"


def store_call(url: str, op: Callable[[], T], error: type[MapReduceError] = StoreError) -> T:
    """``op()`` retried while transiently failing; a lasting failure as ``error`` naming
    ``url`` (MapReduceErrors pass through)."""
    try:
        return retried(op)
    except MapReduceError:
        raise
    except Exception as exc:
        raise error(describe(exc, url)) from exc


# -- input -------------------------------------------------------------------------------


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


#: The name of the marker a complete output holds (on a store: with its manifest).
SUCCESS_MARKER = "_SUCCESS"


def list_input(spec: str, options: Mapping[str, str]) -> list[tuple[str, int]]:
    """The files (URLs) and sizes an input URL names, in name order: a file, a directory
    (walked recursively; ``_``/``.`` names skipped), or a glob pattern.  A directory holding
    a ``_SUCCESS`` manifest (a job's output on a store) gives exactly the parts it lists.

    Raises:
        InputError: naming the URL: it does not exist, matches nothing, the bucket does
            not exist, the credentials are missing or the store denies the listing.
    """
    import glob as globlib

    fs, path = filesystem(spec, options)

    def listed() -> list[tuple[str, int]]:
        if globlib.has_magic(path):
            matched = fs.glob(path, detail=True)
            if not matched:
                raise InputError(f"input pattern {spec!r} matches no file")
            found: list[tuple[str, int]] = []
            for name, info in sorted(matched.items()):
                if info.get("type") == "directory":
                    found.extend(_walk(fs, spec, name))
                else:
                    found.append((url_of(spec, name), int(info.get("size") or 0)))
            return found
        try:
            info = fs.info(path)
        except FileNotFoundError as exc:
            if "bucket" in str(exc).lower():
                raise
            raise InputError(f"input {spec!r} does not exist") from None
        if info.get("type") == "directory":
            return _walk(fs, spec, path)
        return [(spec, int(info.get("size") or 0))]

    return store_call(spec, listed, InputError)


def _walk(fs: Any, spec: str, directory: str) -> list[tuple[str, int]]:
    manifest = read_manifest(fs, directory)
    found = fs.find(directory, detail=True, withdirs=False)
    if manifest is not None:
        return _manifest_parts(spec, directory, manifest, found)
    files = []
    for name, info in found.items():
        relative = name[len(directory) :].strip("/")
        if any(_hidden(part) for part in relative.split("/")):
            continue
        files.append((url_of(spec, name), int(info.get("size") or 0)))
    return sorted(files)


def read_manifest(fs: Any, directory: str) -> dict[str, Any] | None:
    """The manifest in ``directory/_SUCCESS``, or None (no marker, or an empty one)."""
    try:
        data = fs.cat_file(posixpath.join(directory, SUCCESS_MARKER))
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(data)
    except ValueError:
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("parts"), list):
        return None
    return manifest


def _manifest_parts(
    spec: str, directory: str, manifest: dict[str, Any], found: dict[str, Any]
) -> list[tuple[str, int]]:
    parts = []
    for entry in manifest["parts"]:
        name = str(entry.get("name", ""))
        path = posixpath.join(directory, name)
        info = found.get(path)
        if "/" in name or _hidden(name) or not name or info is None:
            raise InputError(
                f"input {spec}: its _SUCCESS lists {name!r}, which is missing: the output "
                "was changed after its job committed it"
            )
        size = int(info.get("size") or 0)
        etag = info.get("ETag") or info.get("etag")
        if size != entry.get("size") or (entry.get("etag") and etag and etag != entry["etag"]):
            raise InputError(
                f"input {spec}: {name} differs from what its _SUCCESS lists (size or "
                "checksum): the output was changed after its job committed it"
            )
        parts.append((url_of(spec, path), size))
    return sorted(parts)


def input_size(path: str, options: Mapping[str, str]) -> int:
    """The size of an input file (plain path or URL)."""
    if not is_url(path):
        try:
            return os.path.getsize(path)
        except OSError as exc:
            raise InputError(f"cannot read input {path}: {exc.strerror}") from exc
    fs, key = filesystem(path, options)
    return int(store_call(path, lambda: fs.size(key), InputError) or 0)


def open_raw(path: str, options: Mapping[str, str] | None = None) -> IO[bytes]:
    """The bytes of ``path`` as they are stored, seekable: a plain file unbuffered (as
    before), a URL through ranged reads with a read-ahead of :data:`READ_AHEAD_BYTES`."""
    if not is_url(path):
        return open(path, "rb", buffering=0)
    fs, key = filesystem(path, options or {})
    return cast(
        IO[bytes],
        store_call(
            path,
            lambda: fs.open(key, "rb", block_size=READ_AHEAD_BYTES, cache_type="readahead"),
            InputError,
        ),
    )


def open_input(path: str, options: Mapping[str, str] | None = None) -> IO[bytes]:
    """The bytes of ``path``, decompressed (``.gz``, ``.bz2``, ``.zst``), buffered for
    reading lines."""
    if not is_url(path):
        if path.endswith(".gz"):
            return cast(IO[bytes], gzip.open(path, "rb"))
        if not is_compressed(path):
            return open(path, "rb", buffering=1 << 20)
        if path.endswith(".bz2"):
            import bz2

            return cast(IO[bytes], bz2.open(path, "rb"))
    raw: IO[bytes] = open_raw(path, options)  # a store's file, or a local .zst
    if path.endswith(".gz"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if path.endswith(".bz2"):
        import bz2

        return cast(IO[bytes], bz2.BZ2File(raw, "rb"))
    if path.endswith(".zst"):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return cast(IO[bytes], io.BufferedReader(cast(Any, reader), buffer_size=1 << 20))
    return cast(IO[bytes], io.BufferedReader(cast(Any, raw), buffer_size=1 << 20))
