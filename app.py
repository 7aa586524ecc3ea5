"""The Hugging Face Space's entry point (README front matter: ``app_file: app.py``).

``python app.py`` is ``python -m demo``: the same flags and environment (GRADIO_SERVER_NAME,
GRADIO_SERVER_PORT). It sits at the repository's root so that a Space, which runs this
file without installing the project, imports ``demo`` and ``sdl_core`` from here.
"""
from demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
