"""A second judge of every ApplyConfiguration, when a talosctl binary is configured: the real
`talosctl validate --mode metal --strict` on the config sent (besides the simulator's own oracle,
oracle.py). Configured with SimCluster(talosctl=PATH), or the TRUSTPLAN_SIM_TALOSCTL environment
variable. Verdicts are remembered by the config's bytes (a plan's dry run and its apply send the same).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

ENV = "TRUSTPLAN_SIM_TALOSCTL"


class TalosctlValidator:
    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.runs = 0  # how many configs talosctl was asked about
        self._verdicts: dict[str, str | None] = {}

    async def problem(self, data: bytes) -> str | None:
        """What `talosctl validate --mode metal --strict` says is wrong with `data`; None: valid."""
        key = hashlib.sha256(data).hexdigest()
        if key in self._verdicts:
            return self._verdicts[key]
        with tempfile.TemporaryDirectory(prefix="trustplan-sim-") as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_bytes(data)
            proc = await asyncio.create_subprocess_exec(
                str(self.binary), "validate", "--config", str(path), "--mode", "metal", "--strict",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
        self.runs += 1
        verdict = None if proc.returncode == 0 else (out + err).decode(errors="replace").strip()
        self._verdicts[key] = verdict
        return verdict


def configured(binary: Path | str | None) -> TalosctlValidator | None:
    """The validator for `binary`, else for $TRUSTPLAN_SIM_TALOSCTL, else None."""
    path = binary or os.environ.get(ENV)
    return TalosctlValidator(Path(path)) if path else None
