"""Loading the action baked into a dedicated image at start-up (OW_AUTOINIT, --init, or
__OW_ACTION_CODE), as if it had been POSTed to /init, so that readiness means "can run".

It runs while the server already answers: /healthz says "starting" until it is done, and
activations that arrive meanwhile wait for it. If it fails, the process exits non-zero with
the reason on stderr, so that a Knative revision never becomes ready with a broken function.
"""

from __future__ import annotations

import base64
import os

import orjson
from pathlib import Path

from actionproxy.diagnostics import log
from actionproxy.archive import is_gzip, is_zip
from actionproxy.config import AutoInit
from actionproxy.runner import ActionRunner


def zip_folder(folder: Path) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo.from_file(path, path.relative_to(folder).as_posix())
                archive.writestr(info, path.read_bytes())
    return buf.getvalue()


def action_code(autoinit: AutoInit) -> tuple[str, bool]:
    """The /init `code` and `binary` for what the image names."""
    if autoinit.path is None:
        return autoinit.code or "", autoinit.binary
    path = autoinit.path
    data = zip_folder(path) if path.is_dir() else path.read_bytes()
    if path.is_dir() or is_zip(data) or is_gzip(data):
        return base64.b64encode(data).decode(), True
    return data.decode("utf-8"), False


async def autoinit(runner: ActionRunner, spec: AutoInit) -> None:
    try:
        code, binary = action_code(spec)
        result = await runner.init(code, binary, spec.main, {}, at_start=True)
        failure = None if result.status == 200 else str(orjson.loads(result.body).get("error"))
    except (OSError, UnicodeDecodeError) as exc:
        failure = str(exc)
    runner.finish_starting()
    if failure is not None:
        where = spec.path or "__OW_ACTION_CODE"
        log.error(f"cannot load the action from {where}: {failure}")
        runner.logs.flush()
        os._exit(3)
