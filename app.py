"""Start the surmlab lab in the browser: ``python app.py [--host 127.0.0.1] [--port 7860] [--share]
[--auth user:password] [--runs-dir runs]`` (the same as ``surmlab app``)."""

import sys

from surmlab.app import main

if __name__ == "__main__":
    sys.exit(main())
