"""Runnable demonstrations: `python -m fastrnn demo NAME`."""
DEMOS = {
    "sine": "fastrnn.demos.sine",
}
