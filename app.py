"""Serve the sft_ui studio: `python app.py [--host H] [--port P] [--workspace DIR]` (also a Space's app_file)."""

import sys

from sft_ui.server import serve_main

if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:]))
