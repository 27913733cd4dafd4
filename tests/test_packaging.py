"""The systemd unit, the installer into a temporary root, and the single-file build run outside any venv."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ashjobs import health
from ashjobs.config import NodeConfig, parse_duration

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "ashjobs.service"
INSTALL = ROOT / "packaging" / "install.sh"
EXAMPLE = ROOT / "ashjobs" / "templates" / "ashjobs.toml.example"


def service_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def seconds(value: str) -> float:
    return float(value) if value.isdigit() else parse_duration(value)


def test_unit_matches_what_the_daemon_does() -> None:
    s = service_settings(UNIT.read_text())
    assert s["Type"] == ["notify"]
    assert s["ExecStart"][0].startswith("/usr/local/bin/ashjobs ") and s["ExecStart"][0].endswith(" run")
    assert "ASHJOBS_DATA_DIR=/var/lib/ashjobs" in s["Environment"]
    assert s["StateDirectory"] == ["ashjobs"] and s["ConfigurationDirectory"] == ["ashjobs"]
    assert s["User"] == ["ashjobs"] and s["Restart"] == ["on-failure"] and s["KillSignal"] == ["SIGTERM"]
    # SIGTERM drains for the grace period; systemd must not SIGKILL before that (and the final commit) is done.
    assert seconds(s["TimeoutStopSec"][0]) >= NodeConfig().grace_period + 10
    # The watchdog pings at half of WatchdogSec while beats are fresh: a hung loop is restarted within
    # STALE_AFTER + WatchdogSec, and a healthy idle one never is.
    assert seconds(s["WatchdogSec"][0]) / 2 > health.BEAT_EVERY
    assert s["CapabilityBoundingSet"] == ["CAP_NET_RAW"] and s["AmbientCapabilities"] == ["CAP_NET_RAW"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes"}.items():
        assert s[key] == [value], key


def verify(tmp_path: Path, text: str) -> tuple[int, list[str]]:
    """systemd-analyze verify on a copy whose ExecStart names a program that exists here."""
    unit = tmp_path / "ashjobs.service"
    unit.write_text(text.replace("/usr/local/bin/ashjobs", shutil.which("true") or "/bin/true"))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # Only lines about our unit count: a container may also print warnings about its own setup.
    return p.returncode, [line for line in (p.stdout + p.stderr).splitlines() if "ashjobs" in line]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert verify(tmp_path, text) == (0, [])
    # The same check catches real mistakes (it would fail on them in the real unit too).
    _, problems = verify(tmp_path, text.replace("Type=notify", "Type=notifyy\nWatchdogSecs=30"))
    assert any("Failed to parse service type" in p for p in problems), problems
    assert any("Unknown key 'WatchdogSecs'" in p for p in problems), problems


def install(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["bash", str(INSTALL), *map(str, args)], capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def actions(out: str) -> dict[str, str]:
    """'installed  /x/y' lines → {path: action}."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"(\w+)\s+(/\S+)", line)
        if m:
            found[m.group(2)] = m.group(1)
    return found


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_installer_fresh_again_upgrade_uninstall_purge(tmp_path: Path) -> None:
    root = tmp_path / "root"
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.write_text("#!/bin/sh\necho ashjobs 1\n")
    v2.write_text("#!/bin/sh\necho ashjobs 2\n")
    binary, etc, data = root / "usr/local/bin/ashjobs", root / "etc/ashjobs", root / "var/lib/ashjobs"
    config, secret, unit = etc / "ashjobs.toml", etc / "cluster.secret", root / "etc/systemd/system/ashjobs.service"
    doc = root / "usr/local/share/doc/ashjobs/README.md"

    fresh = actions(install("--root", root, "--file", v1).stdout)
    assert fresh == {str(binary): "installed", str(etc): "created", str(data): "created",
                     str(root / "var/cache/ashjobs"): "created", str(config): "created",
                     str(secret): "created", str(unit): "installed", str(doc): "installed"}
    assert binary.read_text() == v1.read_text() and mode(binary) == 0o755
    assert mode(etc) == 0o750 and mode(data) == 0o750 and mode(config) == 0o640
    assert mode(secret) == 0o600 and re.fullmatch(r"[0-9a-f]{64}\n", secret.read_text())
    assert unit.read_text() == UNIT.read_text()
    # The unit's Documentation= names a file that is there.
    assert f"Documentation=file:///{doc.relative_to(root)}" in UNIT.read_text()
    assert doc.read_text() == (ROOT / "README.md").read_text()
    example = EXAMPLE.read_text()
    assert config.read_text().replace('\nsecret_file = "/etc/ashjobs/cluster.secret"\n', "\n", 1) == example
    check = subprocess.run([sys.executable, "-m", "ashjobs", "--config", str(config), "--data-dir", str(data),
                            "config", "check"], capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 0, check.stderr  # the written config is valid for this ashjobs

    again = install("--root", root, "--file", v1).stdout
    assert set(actions(again).values()) == {"unchanged", "kept"}, again

    # The operator edits the config and the daemon writes data; an upgrade keeps both, and the secret.
    config.write_text(config.read_text() + "\n[queues]\nchecks = 4\n")
    edited, key = config.read_text(), secret.read_text()
    (data / "ashjobs.db").write_bytes(b"jobs")
    upgrade = actions(install("--root", root, "--file", v2).stdout)
    assert upgrade[str(binary)] == "updated" and upgrade[str(config)] == "kept"
    assert binary.read_text() == v2.read_text()
    assert config.read_text() == edited and secret.read_text() == key
    assert (data / "ashjobs.db").read_bytes() == b"jobs"

    gone = install("--root", root, "--uninstall").stdout
    assert actions(gone)[str(binary)] == "removed" and actions(gone)[str(unit)] == "removed"
    assert not binary.exists() and not unit.exists() and not doc.parent.exists()
    assert config.read_text() == edited and secret.read_text() == key and (data / "ashjobs.db").exists()
    assert actions(install("--root", root, "--uninstall").stdout)[str(binary)] == "absent"

    install("--root", root, "--uninstall", "--purge")
    assert not etc.exists() and not data.exists()


def test_installer_refuses_bad_input(tmp_path: Path) -> None:
    p = install("--root", tmp_path, "--file", tmp_path / "missing", check=False)
    assert p.returncode == 2 and "missing: no such file" in p.stderr
    p = install("--root", tmp_path, "--purge", check=False)
    assert p.returncode == 2 and "--purge goes with --uninstall" in p.stderr
    p = install("--bogus", check=False)
    assert p.returncode == 2 and "unknown option --bogus" in p.stderr
    assert not (tmp_path / "usr").exists()


def python_outside_venv() -> str | None:
    """A python3 >= 3.11 that is not this test's virtual environment."""
    candidates = ["/usr/bin/python3", "/usr/local/bin/python3",
                  *sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.1[1-9]*/bin/python3"))]
    for c in candidates:
        if not os.access(c, os.X_OK):
            continue
        p = subprocess.run([c, "-c", "import sys; print(sys.version_info >= (3, 11) and sys.prefix == sys.base_prefix)"],
                           capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        if p.stdout.strip() == "True":
            return c
    return None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_built_zipapp_runs_outside_any_venv(tmp_path: Path) -> None:
    python = python_outside_venv()
    if python is None:
        pytest.skip("no python3 >= 3.11 outside a virtual environment on this machine")
    kit = tmp_path / "kit"
    build = subprocess.run([str(ROOT / "packaging" / "build"), "--out", str(kit / "ashjobs")], capture_output=True,
                           text=True, timeout=280, env={**os.environ, "PYTHON": sys.executable})
    assert build.returncode == 0, build.stderr
    app = kit / "ashjobs"
    assert sorted(p.name for p in kit.iterdir()) == ["README.md", "ashjobs", "ashjobs.service",
                                                      "ashjobs.toml.example", "install.sh"]
    # A bare environment: no venv, no PYTHONPATH; `/usr/bin/env python3` finds `python` first on PATH.
    env = {"PATH": f"{Path(python).parent}:/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "SHIV_ROOT": str(tmp_path / "shiv"), "LANG": "C.UTF-8"}

    def ashjobs(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([str(app), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        assert not check or p.returncode == 0, p.stdout + p.stderr
        return p

    from ashjobs import __version__

    assert ashjobs("--version").stdout.strip() == f"ashjobs {__version__}"
    site, data = tmp_path / "site.toml", tmp_path / "data"
    ashjobs("--data-dir", str(data), "init", str(site))
    assert "[node]" in site.read_text()
    ashjobs("--config", str(site), "--data-dir", str(data), "config", "check")

    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - the child owns it
    daemon = subprocess.Popen([str(app), "--config", str(site), "--data-dir", str(data), "run"], env=env,
                              stdout=log, stderr=log, cwd=tmp_path)
    log.close()
    try:
        deadline = time.monotonic() + 30
        while "ashjobs serving" not in (tmp_path / "daemon.log").read_text():
            assert daemon.poll() is None and time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
            time.sleep(0.05)
        job = json.loads(ashjobs("--data-dir", str(data), "enqueue", "noop", "--json").stdout)["id"]
        while json.loads(ashjobs("--data-dir", str(data), "jobs", "show", str(job), "--json").stdout)[
                "state"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status = json.loads(ashjobs("--config", str(site), "--data-dir", str(data), "status", "--json").stdout)
        # >= 1: a built-in */5 trigger slot may also have run a job meanwhile.
        assert status["daemon_running"] is True and status["jobs"]["completed"] >= 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0

    # The kit installs itself, and the installed program runs.
    root = tmp_path / "root"
    p = subprocess.run(["bash", str(kit / "install.sh"), "--root", str(root)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    installed = subprocess.run([str(root / "usr/local/bin/ashjobs"), "--version"], capture_output=True, text=True,
                               env=env)
    assert installed.stdout.strip() == f"ashjobs {__version__}"


def test_installer_lets_a_pyinstaller_build_notify(tmp_path: Path) -> None:
    """A PyInstaller build's daemon is a child of its bootloader: the unit gets NotifyAccess=all for it."""
    root, elf, zipapp = tmp_path / "root", tmp_path / "elf", tmp_path / "zipapp"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64))
    zipapp.write_text("#!/usr/bin/env python3\n")
    dropin = root / "etc/systemd/system/ashjobs.service.d/pyinstaller.conf"
    install("--root", root, "--file", elf)
    assert dropin.read_text() == "[Service]\nNotifyAccess=all\n"
    assert actions(install("--root", root, "--file", elf).stdout)[str(dropin)] == "unchanged"
    assert actions(install("--root", root, "--file", zipapp).stdout)[str(dropin)] == "removed"
    assert not dropin.parent.exists()
