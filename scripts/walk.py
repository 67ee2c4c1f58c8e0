"""Walk one request from the CLI to its sealed bundle and list the project files it enters.

    python scripts/walk.py [--type access|erasure]

Seeds the demo CRM, submits and verifies a request through the service, then runs `dsr run ID`
in this process (the Prefect flow included) with a profiler on every thread. It prints the files
of the project the walk entered, in the order first entered, and every *return into* a file: a
call stack on which a file stands twice with another file between (A -> B -> A), which is how a
layer reaching back up, or a helper living in the wrong room, shows. A house in good order has
none of those on the path of a request.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("doors", "dsr", "flows", "connectors")


def _project_file(frame: FrameType) -> str | None:
    name = frame.f_code.co_filename
    if not name.startswith(str(REPO)):
        return None
    relative = Path(name).relative_to(REPO).as_posix()
    return relative if relative.startswith(PACKAGES) else None


class Walk:
    def __init__(self) -> None:
        self.first: dict[str, int] = {}
        self.returns: Counter[tuple[str, ...]] = Counter()
        self._lock = threading.Lock()

    def profile(self, frame: FrameType, event: str, _arg: Any) -> None:
        if event != "call":
            return
        here = _project_file(frame)
        if here is None:
            return
        stack: list[str] = []
        caller = frame.f_back
        while caller is not None:
            name = _project_file(caller)
            if name is not None and (not stack or stack[-1] != name):
                stack.append(name)
            caller = caller.f_back
        with self._lock:
            self.first.setdefault(here, len(self.first))
            if stack and stack[0] != here and here in stack[1:]:
                # `here` is on the stack already, below another file: a return into it.
                cut = stack[: stack.index(here) + 1]
                self.returns[tuple(reversed([here, *cut]))] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--type", default="erasure", choices=("access", "erasure"))
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dsr-walk-"))
    os.environ.update({"DSR_HOME": str(home / "var"), "DSR_SYSTEMS_FILE": str(REPO / "config/demo/systems.yaml")})
    from datetime import UTC, datetime

    from doors.cli import app
    from dsr.models import parse_new_request
    from dsr.service import DsrService
    from sandbox.crm_seed import ACCESS_SUBJECT, ERASURE_SUBJECT, seed_crm
    from sandbox.demo import demo_sandboxes

    with demo_sandboxes() as (_servers, env):
        os.environ.update(env)
        service = DsrService()
        try:
            seed_crm(str(service.data_map.systems["crm"].settings["url"]))
            email = ACCESS_SUBJECT if args.type == "access" else ERASURE_SUBJECT
            new = parse_new_request(type=args.type, email=email, regime="gdpr", received=datetime.now(UTC))
            request_id = service.submit(new, actor="walk").state.request_id
            service.verify(request_id, method="email-code", note="identity checked", actor="walk")
        finally:
            service.close()
        walk = Walk()
        threading.setprofile(walk.profile)
        sys.setprofile(walk.profile)
        try:
            app(["run", request_id], standalone_mode=False)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
    print(f"files entered on the walk of a {args.type} request, in order ({len(walk.first)}):")
    for name in sorted(walk.first, key=walk.first.__getitem__):
        print(f"  {name}")
    print(f"returns into a file already on the stack: {sum(walk.returns.values())}")
    for path, count in walk.returns.most_common(20):
        print(f"  {count:6d}  {' -> '.join(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
