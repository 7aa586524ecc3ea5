"""``python -m demo [--host H] [--port P] [--model NAME_OR_PATH] [--models-dir DIR] [--search-dir DIR ...]``."""
from .cli import main

raise SystemExit(main())
