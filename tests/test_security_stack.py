"""Issue 7 against the real thing: `scripts/run` as an administrator starts
it, then probed the way a local attacker would.

One instance (module fixture) serves every test here: web server and
workers run as the `kdevweb` user, Redis wants the generated password, the
data dir and everything in it is the service user's alone, DEBUG is off.
"""

import http.cookiejar
import os
import pwd
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.procs import ROOT, Proc, descendants, free_port, wait_for

pytestmark = pytest.mark.slow


def _http_ok(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2)
        return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def instance():
    if os.getuid() != 0:
        pytest.skip("scripts/run must be started as root")
    # A data dir the service user can reach (pytest's tmp dirs are root-only).
    base = Path(tempfile.mkdtemp(prefix="kdevweb-stack-", dir="/var/tmp"))
    base.chmod(0o755)
    data = base / "data"
    port, redis_port = free_port(), free_port()
    # Its own SQLite in its own data dir, also in scripts/test's PostgreSQL run.
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DEBUG", "KDEVWEB_BUILDS_DIR") and not k.startswith("DB_")}
    env.update(KDEVWEB_DATA_DIR=str(data), PORT=str(port), REDIS_PORT=str(redis_port))
    proc = Proc(["scripts/run"], env, base / "run.log")
    try:
        wait_for(lambda: _http_ok(port) or proc.popen.poll() is not None, 240, interval=0.5,
                 what="scripts/run to serve")
        assert proc.popen.poll() is None, "scripts/run exited:\n" + proc.output()
        # Removed at the first login with it: keep it for the tests here.
        admin_password = (data / "admin-password").read_text().strip()
        yield {"port": port, "redis_port": redis_port, "data": data, "proc": proc, "admin_password": admin_password}
    finally:
        started = descendants(proc.pid)
        proc.stop()  # SIGTERM to scripts/run's group, as Ctrl-C would
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and [p for p in started if _alive(p)]:
            time.sleep(0.2)
        leftover = {p: _cmdline(p) for p in started if _alive(p)}
        for pid in leftover:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        shutil.rmtree(base, ignore_errors=True)
        assert not leftover, f"scripts/run left processes running: {leftover}"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _uid_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_web_server_workers_and_redis_run_as_the_service_user(instance):
    kdevweb = pwd.getpwnam("kdevweb").pw_uid
    procs = {pid: _cmdline(pid) for pid in descendants(instance["proc"].pid)}
    # (The guests' host agent is the one root process, by design.)
    wanted = {"daphne": False, "buildworker": False, "buildreaper": False, "redis-server": False}
    for pid, cmd in procs.items():
        for name in wanted:
            if name in cmd and "setpriv" not in cmd:
                wanted[name] = True
                assert _uid_of(pid) == kdevweb, f"{cmd} runs as uid {_uid_of(pid)}"
    assert all(wanted.values()), f"not all started: {wanted}\n{procs}"
    # The password is never on a command line (`ps` shows those to everyone).
    password = (instance["data"] / "redis-password").read_text().strip()
    assert not any(password in cmd for cmd in procs.values())


def _as_nobody(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                           sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")


def test_a_local_user_cannot_enqueue_without_the_redis_password(instance):
    data = instance["data"]
    proc = _as_nobody(f"open({str(data / 'redis-password')!r}).read()")
    assert proc.returncode != 0 and "Permission denied" in proc.stderr
    code = (
        "from redis import Redis\nfrom rq import Queue\n"
        f"q = Queue('default', connection=Redis(port={instance['redis_port']}))\n"
        "q.enqueue('os.system', 'touch /tmp/kdevweb-pwned')\n"
    )
    proc = _as_nobody(code)
    assert proc.returncode != 0, "enqueued without the password"
    assert "AuthenticationError" in proc.stderr, proc.stderr[-2000:]


def _session(instance):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{instance['port']}"
    opener.open(base + "/login/").read()
    token = next(c.value for c in jar if c.name == "csrftoken")
    password = instance["admin_password"]
    body = urllib.parse.urlencode({"username": "admin", "password": password, "csrfmiddlewaretoken": token})
    opener.open(urllib.request.Request(base + "/login/", data=body.encode(), headers={"Referer": base + "/login/"}))
    return opener, jar, base


def test_data_at_rest_is_private_after_a_real_build(instance):
    data = instance["data"]
    opener, jar, base = _session(instance)
    page = opener.open(base + "/labs/demo/").read().decode()
    config = re.search(r"/labs/demo/configs/(\d+)/", page).group(1)
    token = next(c.value for c in jar if c.name == "csrftoken")
    req = urllib.request.Request(f"{base}/labs/demo/configs/{config}/r/1/build/",
                                 data=urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode(),
                                 headers={"Referer": base + "/"})
    opener.open(req).read()
    db = sqlite3.connect(f"file:{data / 'kdevweb.sqlite3'}?mode=ro", uri=True)

    def status():
        row = db.execute("select status, error from builds_build order by id desc limit 1").fetchone()
        return row if row and row[0] in ("succeeded", "failed", "cancelled", "lost") else None

    try:
        final = wait_for(status, 180, interval=0.5, what="the demo build")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{instance['proc'].output()[-4000:]}") from None
    assert final[0] == "succeeded", final[1]
    kdevweb = pwd.getpwnam("kdevweb").pw_uid
    top = data.stat()
    assert stat.S_IMODE(top.st_mode) == 0o700 and top.st_uid == kdevweb
    seen_log = False
    for dirpath, dirnames, filenames in os.walk(data):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue  # out-links into the store
            # The host agent (guests' QEMU and virtiofsd) is the one process
            # that stays root: its run dirs under guests/ are root's.
            root_ok = path.relative_to(data).parts[0] == "guests"
            assert st.st_uid == kdevweb or (root_ok and st.st_uid == 0), f"{path} is owned by uid {st.st_uid}"
            assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{path} is {oct(stat.S_IMODE(st.st_mode))}"
            seen_log |= name.startswith("log")
        if "staticfiles" in dirnames:
            dirnames.remove("staticfiles")  # many files, same umask; checked at the top only
        if Path(dirpath) == data and "home" in dirnames:
            # nix's caches: nix sets umask 022 itself; unreachable below the 0700 data dir.
            dirnames.remove("home")
    assert seen_log and (data / "kdevweb.sqlite3").exists()


def test_foreign_host_and_unknown_pages_show_no_internals(instance):
    base = f"http://127.0.0.1:{instance['port']}"
    req = urllib.request.Request(base + "/", headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 400
    body = exc.value.read().decode()
    for leak in ("Traceback", "DisallowedHost", "settings", "ALLOWED_HOSTS", "/work/", "SECRET"):
        assert leak not in body, leak
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(base + "/no/such/page/", timeout=10)
    assert exc.value.code == 404
    body = exc.value.read().decode()
    assert "URLconf" not in body and "labs/<slug" not in body


def test_no_page_shows_the_redis_password(instance):
    data = instance["data"]
    password = (data / "redis-password").read_text().strip()
    opener, _, base = _session(instance)
    assert not (data / "admin-password").exists(), "the first password outlived the first login"
    seen = 0
    for path in ("/", "/labs/demo/", "/admin/", "/admin/django_rq/queue/", "/admin/django_rq/queue/0/",
                 "/labs/demo/builds/"):
        try:
            body = opener.open(base + path).read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
        assert password not in body, path
        seen += "6" in body or "127.0.0.1" in body
    assert seen
