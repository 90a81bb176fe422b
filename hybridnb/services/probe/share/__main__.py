"""``python3 -m hybridnb.services.probe.share``: one host's share of a probe matrix over
stdin/stdout (see :mod:`hybridnb.services.probe.share`)."""

from hybridnb.services.probe.share import main

raise SystemExit(main())
