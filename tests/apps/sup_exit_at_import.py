"""Dies at import: with --lazy-apps every new worker exits with code 3 before serving."""

import os

os._exit(3)
