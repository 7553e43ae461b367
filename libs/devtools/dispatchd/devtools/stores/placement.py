"""Where a private Postgres keeps its data and socket so that the server's OS user can reach them.

As root, postgres runs as the `postgres` user, which must be able to traverse every parent
of its data dir; when it cannot (e.g. under a 0700 pytest temp dir), the data dir moves to a
place under the temp dir that is deterministic per requested path, so a restarted `make up`
finds its data again. Unix socket paths are limited (sun_path is 107 bytes), hence the
socket dir may move there too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# Postgres appends "/.s.PGSQL.NNNNN" to the socket dir.
_MAX_SOCKET_DIR_LEN = 80


def traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` may search (x) directory `path` according to its mode bits."""
    st = path.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & 0o100)
    groups = {user.pw_gid, *(g for g in os.getgrouplist(user.pw_name, user.pw_gid))}
    if st.st_gid in groups:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            st = os.lstat(name)
            if st.st_uid != uid or st.st_gid != gid:
                os.lchown(name, uid, gid)


def data_dir_for(wanted: Path, user: pwd.struct_passwd) -> Path:
    """Where the data dir can live so `user` can reach it: `wanted`, or a stand-in under the temp dir."""
    # Create the parents we need and open them up for traversal (o+x) only if we
    # created them; existing directories are never chmod-ed behind the user's back.
    missing = [p for p in reversed(wanted.parents) if not p.exists()]
    wanted.parent.mkdir(parents=True, exist_ok=True)
    for p in missing:
        p.chmod(p.stat().st_mode | 0o711)
    blocked = [p for p in wanted.parents if not traversable_by(p, user)]
    if not blocked:
        return wanted
    digest = hashlib.sha1(str(wanted).encode()).hexdigest()[:12]
    fallback = Path(tempfile.gettempdir()) / f"dispatchd-pg-{digest}" / wanted.name
    log.warning(
        "postgres user cannot traverse %s; placing the postgres data dir at %s instead",
        blocked[-1],
        fallback,
    )
    fallback.parent.mkdir(parents=True, exist_ok=True)
    fallback.parent.chmod(0o711)
    return fallback


def socket_dir_for(data_dir: Path) -> Path:
    candidate = data_dir.parent / f"{data_dir.name}.sock"
    if len(str(candidate)) <= _MAX_SOCKET_DIR_LEN:
        return candidate
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"dispatchd-pgsock-{digest}"
