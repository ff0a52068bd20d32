"""AWS credentials and settings exactly as botocore resolves them, and their refresh.

botocore (the ``s3`` extra: ``pip install 'mx8[s3]'``) walks the chain AWS users expect, in
its order: environment variables, the shared credentials and config files (``AWS_PROFILE``,
``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_CONFIG_FILE``, ``credential_process``, SSO, assume
role), web identity (``AWS_WEB_IDENTITY_TOKEN_FILE`` + ``AWS_ROLE_ARN``: EKS), container
credentials (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` / ``_RELATIVE_URI``: ECS, EKS pod
identity) and the EC2 instance metadata service (IMDSv2). It also resolves the region, the S3
endpoint (``endpoint_url`` in a profile or its ``[services]`` section, ``AWS_ENDPOINT_URL_S3``,
``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``, partitions such as aws-cn, FIPS and dual-stack) and
``s3.addressing_style``.

The native signer never calls back into Python. Instead each process keeps one
:class:`CredentialFeed` per profile: a ``_core.S3Credentials`` that every S3 client and engine
of the process shares, and a daemon thread that asks botocore for the current keys every
``MX8_S3_CREDENTIALS_POLL_S`` seconds (1; read when the thread starts) (botocore refreshes temporary credentials itself, ahead of their expiry)
and pushes any change in. Requests already signed with keys that a refresh replaced are
retried once with the new ones (csrc/core/s3_request.c), so a rotation costs no error and no
pause. DataLoader workers and torchrun ranks resolve their own feed from the same sources;
no secret crosses a process boundary.
"""
from __future__ import annotations

import functools
import threading
import weakref
from typing import Any, Dict, Optional, Tuple

from . import _core
from .envvars import env_positive
from .errors import CredentialsError

INSTALL_HINT = "pip install 'mx8[s3]' (botocore) to read credentials from ~/.aws, roles and instance metadata"


def botocore_available() -> bool:
    try:
        import botocore.session  # noqa: F401
    except ImportError:
        return False
    return True


def _session(profile: Optional[str]):
    import botocore.session
    from botocore.exceptions import BotoCoreError
    try:
        s = botocore.session.Session(profile=profile)
        s.get_scoped_config()  # raises ProfileNotFound now rather than at the first request
    except BotoCoreError as e:
        raise CredentialsError(f"S3 configuration: {e}") from None
    return s


def aws_settings(profile: Optional[str], region: Optional[str]) -> Dict[str, Any]:
    """What botocore's S3 client would use: region, endpoint_url, whether that endpoint was
    configured (not AWS's default), addressing_style and ca_bundle (None where unset).
    Cached per profile, region, AWS_* environment and config files (botocore takes ~0.2 s to
    work it out)."""
    return dict(_aws_settings(profile, region, _sources_key()))


def _sources_key() -> Tuple[Any, ...]:
    """What botocore's resolution depends on: the AWS_* variables and the two files."""
    import os
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    files = []
    for var, default in (("AWS_CONFIG_FILE", "~/.aws/config"), ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")):
        path = os.path.expanduser(os.environ.get(var) or default)
        try:
            st = os.stat(path)
            files.append((path, st.st_mtime_ns, st.st_size))
        except OSError:
            files.append((path, 0, -1))
    return env + tuple(files)


@functools.lru_cache(maxsize=32)
def _aws_settings(profile: Optional[str], region: Optional[str], _key: Tuple[Any, ...]):
    from botocore.config import Config
    s = _session(profile)
    region = region or s.get_config_variable("region") or "us-east-1"
    # A client is the one place botocore applies all its endpoint rules (partitions, FIPS,
    # dual-stack, endpoint_url from the environment, the profile and [services]); creating
    # one makes no request.
    client = s.create_client("s3", region_name=region, config=Config(signature_version="s3v4"))
    default = s.create_client("s3", region_name=region, endpoint_url=None,
                              config=Config(signature_version="s3v4", ignore_configured_endpoint_urls=True))
    s3_opts = (s.get_scoped_config().get("s3") or {})
    return tuple({"region": client.meta.region_name, "endpoint_url": client.meta.endpoint_url,
                  "custom_endpoint": client.meta.endpoint_url != default.meta.endpoint_url,
                  "addressing_style": s3_opts.get("addressing_style") if isinstance(s3_opts, dict) else None,
                  "ca_bundle": s.get_config_variable("ca_bundle"),
                  # AWS_MAX_ATTEMPTS or the profile's max_attempts: attempts in all, the first included
                  "max_attempts": s.get_config_variable("max_attempts")}.items())


class CredentialFeed:
    """The current keys of one credential source, kept in a shared ``_core.S3Credentials``."""

    def __init__(self, profile: Optional[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        self.profile = profile
        try:
            self._creds = _session(profile).get_credentials()  # botocore's chain; None when it finds nothing
            frozen = self._frozen() if self._creds is not None else None
        except (BotoCoreError, ClientError) as e:  # a source that answered with an error
            raise CredentialsError(f"S3 credentials: {type(e).__name__}: {e}") from None
        if self._creds is None:
            raise CredentialsError("no S3 credentials: botocore found none (environment, "
                             f"{'profile ' + repr(profile) if profile else 'the default profile'} in ~/.aws, "
                             "web identity, container or instance metadata); set AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or pass unsigned=True for a public bucket")
        self.method = getattr(self._creds, "method", "unknown")
        self.native = _core.S3Credentials(*frozen, refreshable=self.refreshable)
        self._last = frozen
        self.refreshes = 0

    def _frozen(self) -> Tuple[str, str, Optional[str]]:
        f = self._creds.get_frozen_credentials()  # refreshes first when botocore says it is time
        return f.access_key, f.secret_key, f.token or None

    def poll(self) -> None:
        """Pushes the keys into the native object when botocore has new ones."""
        frozen = self._frozen()
        if frozen != self._last:
            self.native.set(*frozen)
            self._last = frozen
            self.refreshes += 1

    @property
    def refreshable(self) -> bool:
        return hasattr(self._creds, "refresh_needed")


_feeds: Dict[Tuple[Any, ...], CredentialFeed] = {}
_feeds_lock = threading.Lock()
_poller: Optional[threading.Thread] = None
_poller_pid = 0


def feed(profile: Optional[str]) -> CredentialFeed:
    """This process's feed for a profile (None: botocore's default chain), made on first use
    (and again when the AWS_* variables or the config files change)."""
    import os
    global _poller, _poller_pid
    with _feeds_lock:
        if _poller_pid != os.getpid():  # a fork()ed child has the dict but not the thread
            _feeds.clear()
            _poller, _poller_pid = None, os.getpid()
        key = (profile,) + _sources_key()
        f = _feeds.get(key)
        if f is None:
            f = _feeds[key] = CredentialFeed(profile)
        if f.refreshable and _poller is None:
            # How often each feed asks botocore for the current keys (cheap unless it refreshes).
            poll_s = max(0.05, env_positive("MX8_S3_CREDENTIALS_POLL_S", 1.0))
            _poller = threading.Thread(target=_poll_forever, args=(weakref.ref(threading.main_thread()), poll_s),
                                       name="mx8-s3-credentials", daemon=True)
            _poller.start()
        return f


def _poll_forever(main: "weakref.ref[threading.Thread]", poll_s: float) -> None:
    import logging
    import time
    log = logging.getLogger("mx8.s3")
    while True:
        time.sleep(poll_s)
        t = main()
        if t is None or not t.is_alive():
            return
        with _feeds_lock:
            feeds = [f for f in _feeds.values() if f.refreshable]
        for f in feeds:
            try:
                f.poll()
            except Exception as e:  # the old keys stay in use; botocore retries at the next poll
                log.warning("mx8: refreshing S3 credentials (%s) failed, will retry: %s", f.method, e)
