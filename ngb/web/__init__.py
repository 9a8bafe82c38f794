"""The web server and its routes (ngb/web/app.py); the daemon reaches it only through serve_web."""
