"""Operations: the systemd service, `ngb doctor`, `ngb init` (see docs/deployment.md)."""
