"""A bind source swapped for a link between sbox's check and the mount (every backend).

Another sandbox writing the same project (a dev server, say) swaps `out/` and a link to a
HOME-like directory holding a secret, over and over, while sbox sets up a sandbox whose profile may
write `out/`. Checked paths are re-resolved by the backend at mount time, so without pinning some
runs mount the link's target, writable: the secret is read and the directory written. sbox binds
the directory it opened (bwrap) or checks inside that the target is it (docker): never the link's.

The persistence guard looks at the same tree before and after each such step (`out/` is a
package directory it watches) and puts back what it kept: a walk that went through `out` while it
was the link kept the secret and wrote it into the project, where the next run read it. So the
host is checked afterwards too: no copy of the secret anywhere in the project or the quarantine.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .helpers import Runs, project

# In bursts of up to a few milliseconds, with pauses of up to 6 ms between them (one in ten of 0.2 to 0.5 s): swapped without a pause,
# the tree never held still for the plan's walk for `.git` entries, which then stops the plan (exit
# 2, as it should) so often that on a loaded machine no run of 40 got as far as the mounts (CI).
FLIP = r"""
import ctypes, os, random, sys, time
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
end = time.time() + float(sys.argv[2])
while time.time() < end:
    for _ in range(random.randint(1, 2000)):
        libc.renameat2(-100, b"out", -100, b"out.x", 2)  # RENAME_EXCHANGE: `out` is the dir or the link
    # now and then a longer pause: docker's set-up, from its check to its mount, outlasts every short
    # one, and on a loaded machine no run of 40 reached the mounts (CI: 6 stopped, 34 refused)
    time.sleep(random.uniform(0, 0.006) if random.random() < 0.9 else random.uniform(0.2, 0.5))
"""


def test_a_bind_source_swapped_for_a_link_is_never_mounted(runs: Runs, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret").write_text("SBOX-RACE-CANARY\n")
    root = project(tmp_path, """\
        version: 1
        profiles:
          w:
            network: off
            writable: [out/]
        """)
    (root / "out").mkdir()
    (root / "out.x").symlink_to("../home")
    # The live control: through the link, the secret is right there.
    assert (root / "out.x" / "secret").read_text() == "SBOX-RACE-CANARY\n"
    rounds = 40
    flipper = subprocess.Popen([sys.executable, "-c", FLIP, str(root), "600"])
    outcomes: dict[int, int] = {}
    said: dict[int, str] = {}
    try:
        for _ in range(rounds):
            command = ("sh", "-c", "cat out/secret 2>/dev/null; echo x >> out/written 2>/dev/null; true")
            result = subprocess.run(runs.argv(command, "--profile", "w"), cwd=root, capture_output=True,
                                    text=True, timeout=120, stdin=subprocess.DEVNULL)
            assert "SBOX-RACE-CANARY" not in result.stdout + result.stderr, "the link's target was mounted"
            outcomes[result.returncode] = outcomes.get(result.returncode, 0) + 1
            said[result.returncode] = result.stderr[-600:]  # what each outcome said, last seen
            if result.returncode not in (0, 2, 125):
                print("UNEXPECTED", result.returncode, result.stderr[-800:])
    finally:
        flipper.kill()
        flipper.wait()
    assert not (home / "written").exists(), "the sandbox wrote through the swapped-in link"
    assert sorted(home.iterdir()) == [home / "secret"]
    copies = [str(p) for top in (root, Path(os.environ["SBOX_STATE_DIR"])) for p in top.rglob("*")
              if p.is_file() and not p.is_symlink() and b"SBOX-RACE-CANARY" in p.read_bytes()]
    assert not copies, f"the secret was copied out of the link's target: {copies}"
    assert outcomes.get(0, 0) > 0, (outcomes, said)  # the ordinary case still runs
    assert set(outcomes) <= {0, 2, 125}, outcomes  # a swap seen at the check is refused, never followed


def test_a_staged_output_s_directory_swapped_for_a_link_is_never_followed(runs: Runs, tmp_path: Path) -> None:
    """A profile may write one file that does not exist yet (`writable: [gen/canary.txt]`): sbox
    stages it, and copies the step's output back after. Another sandbox swaps `gen` and a link to
    a directory in HOME meanwhile (red team 6, Critical: the staging read HOME's file into the
    sandbox and wrote the step's output over it)."""
    secret = tmp_path / "home" / "secret"
    secret.mkdir(parents=True)
    canary = secret / "canary.txt"
    canary.write_text("SBOX-STAGE-CANARY\n")
    before = canary.stat()
    root = project(tmp_path, """\
        version: 1
        profiles:
          stage:
            network: off
            writable: [gen/canary.txt]
        """)
    (root / "gen").mkdir()
    (root / "gen.x").symlink_to("../home/secret")
    # The live control: through the link, HOME's file is right there, and writable.
    assert (root / "gen.x" / "canary.txt").read_text() == "SBOX-STAGE-CANARY\n"
    flipper = subprocess.Popen([sys.executable, "-c", FLIP.replace('b"out"', 'b"gen"').replace('b"out.x"', 'b"gen.x"'),
                                str(root), "600"])
    outcomes: dict[int, int] = {}
    try:
        for _ in range(60):
            command = ("sh", "-c", "cat gen/canary.txt 2>/dev/null; echo OVERWRITTEN > gen/canary.txt 2>/dev/null; true")
            result = subprocess.run(runs.argv(command, "--profile", "stage"), cwd=root, capture_output=True,
                                    text=True, timeout=120, stdin=subprocess.DEVNULL)
            assert "SBOX-STAGE-CANARY" not in result.stdout + result.stderr, "HOME's file was staged into the sandbox"
            outcomes[result.returncode] = outcomes.get(result.returncode, 0) + 1
    finally:
        flipper.kill()
        flipper.wait()
    after = canary.stat()
    assert canary.read_text() == "SBOX-STAGE-CANARY\n", "the step's output was written over HOME's file"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in secret.iterdir()) == ["canary.txt"], "sbox made a file in HOME"
    assert outcomes.get(0, 0) > 0, outcomes  # the ordinary case still runs
