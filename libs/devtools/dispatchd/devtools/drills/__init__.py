"""Disaster-recovery drills: each acts on the platform only through `Platform` and writes measured evidence.

- `platform`: the `Platform` protocol and the component names.
- `local`: `LocalPlatform`, the protocol on a local `Stack` (processes on this machine).
"""

from __future__ import annotations

from dispatchd.devtools.drills.platform import COMPONENTS, Platform, split

__all__ = ["COMPONENTS", "Platform", "split"]
