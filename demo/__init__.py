"""The web demo (Gradio): ``python -m demo``, or ``demo.app.build_app()`` in-process.

It calls ``sdl_core`` only: no model math here.
"""
