from __future__ import annotations

from peergrad.cli import main

raise SystemExit(main())
