"""The board's /main.py: MicroPython runs it after boot.py on every reset and wake."""

from firmware import app

app.main()
