"""The Hugging Face Space's entry point (``app_file: demo/app.py``): ``python demo/app.py``
runs the same command line as ``python -m demo`` (flags and environment alike).

It imports the installed packages (``requirements.txt`` installs this project), so it
runs from any folder; the app itself is :mod:`demo.ui`.
"""
from demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
