import sys

from .cli import main

# File names and arguments that are not UTF-8 reach Python as lone surrogates;
# print them as \udcXX escapes (valid UTF-8, and valid JSON escapes) instead of
# failing with UnicodeEncodeError or writing invalid UTF-8.
for _stream in (sys.stdout, sys.stderr):
    if hasattr(_stream, "reconfigure"):
        _stream.reconfigure(errors="backslashreplace")
sys.exit(main())
