"""Where the files that ship beside the ``ngb`` package live: ``agent/`` (the agent image's build
context), ``bridge/`` (the WhatsApp bridge), ``packaging/`` (the systemd unit template) and
``docs/deployment.md``.

Two layouts, one answer from `resource_root()`:

- an installed wheel (``pip install .``): the build step in ``setup.py`` copies them into the package
  as ``ngb/_resources/``, so they travel with it (package data);
- a checkout run in place (``python -m ngb``, an editable install): they sit in the folder holding
  ``ngb/``, and ``ngb/_resources/`` does not exist.

Nothing else should compute these paths (no ``Path(__file__).parents[...]`` reaching out of the
package); a module that needs one of these folders asks `resource`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "RESOURCE_DIRS",
    "PACKAGE_DIR",
    "resource_root",
    "resource",
    "in_checkout",
    "package_parent",
    "cache_root",
]

PACKAGE_DIR = Path(__file__).resolve().parent
# What setup.py copies into ngb/_resources/ (bridge/ without node_modules): keep the two in step.
RESOURCE_DIRS = ("agent", "bridge", "packaging", "docs")
_BUNDLED = PACKAGE_DIR / "_resources"
_CHECKOUT = PACKAGE_DIR.parent


def in_checkout() -> bool:
    """True when ``ngb`` runs from a source checkout (no bundled ``_resources``)."""
    return not (_BUNDLED / "agent").is_dir()


def resource_root() -> Path:
    """The folder holding ``agent/``, ``bridge/``, ``packaging/`` and ``docs/``: ``ngb/_resources``
    in an installed wheel, else the checkout (the folder holding the ``ngb`` package)."""
    return _CHECKOUT if in_checkout() else _BUNDLED


def resource(*parts: str) -> Path:
    """A path under `resource_root`: ``resource("packaging", "nanogridbot.service.in")``."""
    return resource_root().joinpath(*parts)


def package_parent() -> Path:
    """The folder the ``ngb`` package was loaded from: the checkout, or site-packages. No agent may
    mount it (ngb/sandbox/mounts.py): whoever edits the daemon's code owns the host."""
    return _CHECKOUT


def cache_root() -> Path:
    """Where downloads are cached (the agent image's wheels): ``.cache`` in a checkout (as before),
    else the user's cache folder (``$XDG_CACHE_HOME/nanogridbot``, ``~/.cache/nanogridbot``),
    never inside site-packages."""
    if in_checkout():
        return _CHECKOUT / ".cache"
    from .config.environment import user_cache_dir

    return user_cache_dir() / "nanogridbot"
