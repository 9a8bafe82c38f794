from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngb.config import Config
from ngb.sandbox import mounts as mounts_mod
from ngb.sandbox.mounts import (
    BLOCKED_PATTERNS,
    AllowEntry,
    Allowlist,
    AllowlistError,
    Mount,
    MountRequest,
    Refusal,
    blocked_match,
    default_forbidden_roots,
    load_allowlist,
    resolve_mounts,
)


class Tree:
    """A fake home with projects, secrets, a state folder and an allowlist folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.home = self.root / "home"
        self.projects = self.home / "projects"
        self.state = self.root / "state"
        self.conf = self.home / ".config" / "nanogridbot"
        for d in (
            self.projects / "app" / "src",
            self.projects / "docs",
            self.home / ".ssh",
            self.home / ".aws",
            self.home / "outside",
            self.state / "groups" / "other",
            self.conf,
        ):
            d.mkdir(parents=True, exist_ok=True)
        (self.projects / "app" / "src" / "main.py").write_text("print('hi')\n")
        (self.projects / "app" / "keyboard.c").write_text("// *key* is not applied to contents\n")
        (self.projects / "docs" / "readme.md").write_text("docs\n")
        (self.home / ".ssh" / "id_rsa").write_text("PRIVATE\n")
        (self.home / "outside" / "file.txt").write_text("outside\n")
        self.allowlist_path = self.conf / "mount-allowlist.toml"

    def allowlist(
        self, *entries: AllowEntry, non_main_read_only: bool = True, blocked: Sequence[str] = ()
    ) -> Allowlist:
        entries = entries or (AllowEntry(self.projects, read_write=True),)
        return Allowlist(tuple(entries), self.allowlist_path, non_main_read_only, tuple(blocked))

    def resolve(
        self,
        *requests: MountRequest | dict | str,
        allowlist: Allowlist | None = None,
        folder: str = "main",
        is_main: bool = True,
        **kwargs: object,
    ) -> tuple[list[Mount], list[Refusal]]:
        reqs = [MountRequest(r) if isinstance(r, str) else r for r in requests]
        return resolve_mounts(
            reqs,
            allowlist if allowlist is not None else self.allowlist(),
            folder=folder,
            is_main=is_main,
            forbidden_roots=[self.state],
            **kwargs,  # type: ignore[arg-type]
        )

    def one(self, request: MountRequest | dict | str, **kwargs: object) -> Mount:
        mounts, refusals = self.resolve(request, **kwargs)
        assert not refusals, refusals
        assert len(mounts) == 1
        return mounts[0]

    def refused(self, request: MountRequest | dict | str, **kwargs: object) -> str:
        mounts, refusals = self.resolve(request, **kwargs)
        assert not mounts, mounts
        assert len(refusals) == 1
        return refusals[0].reason


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tree:
    t = Tree(tmp_path)
    monkeypatch.setenv("HOME", str(t.home))
    return t


# -- the happy path -----------------------------------------------------------------------------------


def test_allowed_folder_is_mounted_read_only_by_default(tree: Tree) -> None:
    mount = tree.one(str(tree.projects / "app"))
    assert mount == Mount(tree.projects / "app", "/workspace/extra/app", read_only=True)


def test_tilde_and_container_name(tree: Tree) -> None:
    mount = tree.one(MountRequest("~/projects/app/src", container_name="code"))
    assert mount == Mount(tree.projects / "app" / "src", "/workspace/extra/code", read_only=True)


def test_the_allowlisted_folder_itself_and_a_single_file(tree: Tree) -> None:
    assert tree.one(str(tree.projects / "docs")).host_path == tree.projects / "docs"
    readme = str(tree.projects / "docs" / "readme.md")
    allow = tree.allowlist(AllowEntry(tree.projects / "docs"))
    # Container names follow the folder rules (no dots), so a file usually needs a name.
    assert "set container_name" in tree.refused(readme, allowlist=allow)
    mount = tree.one(MountRequest(readme, container_name="readme"), allowlist=allow)
    assert mount == Mount(tree.projects / "docs" / "readme.md", "/workspace/extra/readme", read_only=True)


def test_dict_requests_are_accepted(tree: Tree) -> None:
    mounts, refusals = tree.resolve(
        {"host_path": "~/projects/docs", "read_write": True},
        {"host_path": "~/projects/app", "bogus": 1},
        {"container_name": "x"},
        42,
    )
    assert [m.container_path for m in mounts] == ["/workspace/extra/docs"]
    assert mounts[0].read_only is False
    assert len(refusals) == 3 and all("mount request" in r.reason for r in refusals)


# -- traversal and symlinks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "~/projects/../.ssh",
        "~/projects/app/../../outside",
        "~/projects/..",
        "{projects}/app/..",
        "~/projects/app/../app",
    ],
)
def test_dotdot_is_refused(tree: Tree, path: str) -> None:
    assert "'..'" in tree.refused(path.format(projects=tree.projects))


def test_single_dot_components_are_fine(tree: Tree) -> None:
    assert tree.one("~/projects/./app/.").host_path == tree.projects / "app"


def test_symlink_escape_into_a_blocked_folder(tree: Tree) -> None:
    (tree.projects / "ssh-link").symlink_to(tree.home / ".ssh")
    reason = tree.refused("~/projects/ssh-link")
    assert "resolves to" in reason and "'.ssh' is blocked" in reason
    (tree.projects / "key-link").symlink_to(tree.home / ".ssh" / "id_rsa")
    assert "is blocked" in tree.refused(MountRequest("~/projects/key-link", container_name="k"))


def test_symlink_escape_outside_the_allowlist(tree: Tree) -> None:
    (tree.projects / "out-link").symlink_to(tree.home / "outside")
    assert "not at or under any folder in the mount allowlist" in tree.refused("~/projects/out-link")
    (tree.projects / "rel-link").symlink_to("../outside")
    assert "not at or under" in tree.refused("~/projects/rel-link")


def test_symlinked_parent_is_resolved(tree: Tree) -> None:
    # A symlink *into* the allowlisted folder is fine; the real path is what gets mounted.
    (tree.home / "shortcut").symlink_to(tree.projects / "app")
    mount = tree.one("~/shortcut")
    assert mount.host_path == tree.projects / "app"
    assert mount.container_path == "/workspace/extra/shortcut"


def test_allowlist_entry_through_a_symlink(tree: Tree) -> None:
    (tree.home / "p").symlink_to(tree.projects)
    assert tree.one("~/projects/docs", allowlist=tree.allowlist(AllowEntry(tree.home / "p"))).read_only


def test_symlink_loop_and_missing_path(tree: Tree) -> None:
    (tree.projects / "loop").symlink_to(tree.projects / "loop")
    assert "symlink loop" in tree.refused("~/projects/loop")
    assert "does not exist" in tree.refused("~/projects/nope")
    (tree.projects / "dangling").symlink_to(tree.projects / "gone")
    assert "does not exist" in tree.refused("~/projects/dangling")


def test_symlinks_inside_a_mounted_folder_are_not_followed_by_the_scan(tree: Tree) -> None:
    # A symlink inside the folder pointing at a secret folder: the scan does not follow it (the
    # container cannot either: the kernel resolves it inside the container), so its target's
    # contents do not refuse the mount; a link *named* like a secret does.
    (tree.projects / "app" / "notes").symlink_to(tree.home / ".ssh")
    assert tree.one("~/projects/app").host_path == tree.projects / "app"
    (tree.projects / "app" / "id_rsa").symlink_to(tree.home / "outside" / "file.txt")
    assert "'id_rsa'" in tree.refused("~/projects/app")


# -- the blocklist ------------------------------------------------------------------------------------

BLOCKED_NAMES = [
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".env",
    ".env.local",
    "server.pem",
    "tls.key",
    "apikeys",
    "monkey",
    "id_rsa",
    "id_rsa.pub",
    "id_ed25519_work",
    "credentials",
    "credentials.json",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "secrets",
    "secrets.yaml",
    ".SSH",
    "Secrets.TXT",
]


@pytest.mark.parametrize("name", BLOCKED_NAMES)
def test_blocked_names_are_refused(tree: Tree, name: str) -> None:
    target = tree.projects / name
    target.mkdir()
    (target / "f").write_text("x")
    assert "is blocked" in tree.refused(MountRequest(str(target), container_name="x"))
    # ... and anything under them.
    assert "is blocked" in tree.refused(MountRequest(str(target / "f"), container_name="x"))


def test_two_component_pattern(tree: Tree) -> None:
    gcloud = tree.home / ".config" / "gcloud"
    gcloud.mkdir(parents=True)
    allow = tree.allowlist(AllowEntry(tree.home))
    assert "'.config/gcloud'" in tree.refused("~/.config/gcloud", allowlist=allow)
    # Not when the components are apart.
    other = tree.projects / ".config" / "x" / "gcloud"
    other.mkdir(parents=True)
    assert tree.one(MountRequest(str(other))).host_path == other


def test_blocked_match() -> None:
    assert blocked_match(("a", "b", ".ssh", "c")) == (".ssh", ".ssh")
    assert blocked_match(("a", ".config", "gcloud")) == (".config/gcloud", ".config/gcloud")
    assert blocked_match(("a", "b")) is None
    assert blocked_match(("x", ".ENV.production")) == (".env.*", ".ENV.production")
    assert blocked_match((".env", "x"), at_end=True) is None


def test_allowlist_cannot_override_the_blocklist(tree: Tree) -> None:
    allow = tree.allowlist(AllowEntry(tree.home / ".ssh", read_write=True), AllowEntry(tree.home / ".aws"))
    assert "'.ssh' is blocked" in tree.refused("~/.ssh", allowlist=allow)
    assert "is blocked" in tree.refused("~/.ssh/id_rsa", allowlist=allow)
    assert "'.aws' is blocked" in tree.refused("~/.aws", allowlist=allow)


def test_allowlist_extra_patterns(tree: Tree) -> None:
    allow = tree.allowlist(blocked=["*.sqlite", "private*"])
    (tree.projects / "private-notes").mkdir()
    assert "private*" in tree.refused("~/projects/private-notes", allowlist=allow)
    (tree.projects / "docs" / "cache.SQLITE").write_text("")
    assert "contains 'cache.SQLITE'" in tree.refused("~/projects/docs", allowlist=allow)


def test_home_folder_name_is_not_matched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A user called "mikey" would otherwise match "*key*" on every path under their home.
    home = tmp_path.resolve() / "mikey"
    (home / "projects" / "app").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    allow = Allowlist((AllowEntry(home / "projects"),), tmp_path / "conf" / "allow.toml")
    mounts, refusals = resolve_mounts(
        [MountRequest("~/projects/app")], allow, folder="main", is_main=True, forbidden_roots=[]
    )
    assert refusals == [] and mounts[0].host_path == home / "projects" / "app"
    # Outside the home folder every component counts.
    monkeypatch.setenv("HOME", str(tmp_path / "someone-else"))
    mounts, refusals = resolve_mounts(
        [MountRequest(str(home / "projects" / "app"))], allow, folder="main", is_main=True, forbidden_roots=[]
    )
    assert mounts == [] and "'mikey' is blocked" in refusals[0].reason


# -- folder contents ----------------------------------------------------------------------------------


def test_folder_containing_secrets_is_refused(tree: Tree) -> None:
    (tree.projects / "app" / ".env").write_text("TOKEN=x\n")
    reason = tree.refused("~/projects/app")
    assert "contains '.env'" in reason
    assert "contains 'app/.env'" in tree.refused("~/projects")


def test_mounting_home_is_refused(tree: Tree) -> None:
    allow = tree.allowlist(AllowEntry(tree.home))
    reason = tree.refused("~", allowlist=allow)
    assert "contains" in reason or "never mounted" in reason


def test_key_substring_is_not_applied_to_contents(tree: Tree) -> None:
    assert tree.one("~/projects/app").host_path == tree.projects / "app"  # holds keyboard.c


def test_nested_gcloud_in_contents(tree: Tree) -> None:
    (tree.projects / "app" / ".config" / "gcloud").mkdir(parents=True)
    assert "'.config/gcloud'" in tree.refused("~/projects/app")
    (tree.projects / "cfg").mkdir()
    (tree.projects / "cfg" / "gcloud").mkdir()
    assert tree.one("~/projects/cfg").host_path == tree.projects / "cfg"


def test_scan_depth_and_limit(tree: Tree) -> None:
    deep = tree.projects / "app" / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / ".env").write_text("x")
    assert tree.one("~/projects/app").host_path == tree.projects / "app"  # depth 4: not scanned
    assert "contains 'a/b/c/.env'" in tree.refused("~/projects/app", scan_depth=4)
    for i in range(20):
        (tree.projects / "docs" / f"f{i}").write_text("")
    assert "too many to check" in tree.refused("~/projects/docs", scan_limit=10)


def test_unreadable_subfolder_is_refused(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir

    def scandir(path: object) -> object:
        if str(path).endswith("src"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(mounts_mod.os, "scandir", scandir)
    assert "cannot be checked" in tree.refused("~/projects/app")


def test_read_only_mount_with_a_submount_is_refused(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    # Docker's recursive bind leaves sub-mounts writable under a read-only bind.
    monkeypatch.setattr(mounts_mod, "mount_points", lambda: [Path("/"), tree.projects / "app" / "src"])
    assert "another mounted file system" in tree.refused("~/projects/app")
    # Read-write: nothing to lose; and the sub-mount itself is fine.
    assert not tree.one(MountRequest("~/projects/app", read_write=True)).read_only
    assert tree.one("~/projects/app/src").read_only


# -- forbidden roots ----------------------------------------------------------------------------------


def test_forbidden_roots(tree: Tree) -> None:
    allow = tree.allowlist(AllowEntry(tree.root))
    assert "is '" in tree.refused(str(tree.state), allowlist=allow)
    assert "is inside" in tree.refused(str(tree.state / "groups" / "other"), allowlist=allow)
    assert "contains" in tree.refused(str(tree.root), allowlist=allow)


def test_allowlist_folder_is_never_mounted(tree: Tree) -> None:
    allow = tree.allowlist(AllowEntry(tree.home / ".config"))
    assert "never mounted" in tree.refused("~/.config/nanogridbot", allowlist=allow)
    assert "never mounted" in tree.refused(MountRequest("~/.config", container_name="cfg"), allowlist=allow)
    # A sibling folder is fine.
    (tree.home / ".config" / "editor").mkdir()
    assert tree.one("~/.config/editor", allowlist=allow).host_path == tree.home / ".config" / "editor"


def test_docker_socket_and_special_files(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="ngb-", dir="/tmp"))  # AF_UNIX paths must be short
    try:
        sock_path = sock_dir / "docker.sock"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(sock_path))
        monkeypatch.setenv("DOCKER_HOST", f"unix://{sock_path}")
        allow = tree.allowlist(AllowEntry(sock_dir))
        mounts, refusals = resolve_mounts(
            [
                MountRequest(str(sock_path), container_name="d"),
                MountRequest(str(sock_dir), container_name="e"),
            ],
            allow,
            folder="main",
            is_main=True,
            forbidden_roots=[],
        )
        assert mounts == []
        assert "never mounted" in refusals[0].reason
        assert "contains" in refusals[1].reason
        sock.close()
    finally:
        shutil.rmtree(sock_dir)
    fifo = tree.projects / "pipe"
    os.mkfifo(fifo)
    assert "not a folder or a regular file" in tree.refused("~/projects/pipe")


def test_default_forbidden_roots(tree: Tree) -> None:
    config = Config(state_dir=tree.state, mount_allowlist=tree.allowlist_path)
    roots = default_forbidden_roots(config)
    assert tree.state in roots and tree.conf in roots
    package_home = Path(mounts_mod.__file__).resolve().parents[2]
    assert package_home in roots


# -- read-write rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_rw", "entry_rw", "is_main", "non_main_ro", "read_only"),
    [
        (False, False, True, True, True),
        (True, False, True, True, True),
        (False, True, True, True, True),
        (True, True, True, True, False),
        (True, True, False, True, True),
        (True, True, False, False, False),
        (True, False, False, False, True),
    ],
)
def test_read_write_rules(
    tree: Tree, request_rw: bool, entry_rw: bool, is_main: bool, non_main_ro: bool, read_only: bool
) -> None:
    allow = tree.allowlist(AllowEntry(tree.projects, read_write=entry_rw), non_main_read_only=non_main_ro)
    mount = tree.one(MountRequest("~/projects/docs", read_write=request_rw), allowlist=allow, is_main=is_main)
    assert mount.read_only is read_only


def test_read_write_if_any_matching_entry_allows_it(tree: Tree) -> None:
    allow = tree.allowlist(
        AllowEntry(tree.home / "projects"), AllowEntry(tree.projects / "docs", read_write=True)
    )
    assert not tree.one(MountRequest("~/projects/docs", read_write=True), allowlist=allow).read_only
    assert tree.one(MountRequest("~/projects/app", read_write=True), allowlist=allow).read_only


def test_groups_restrict_entries(tree: Tree) -> None:
    allow = tree.allowlist(AllowEntry(tree.projects, groups=("Main",)))
    assert tree.one("~/projects/docs", allowlist=allow, folder="main").read_only
    reason = tree.refused("~/projects/docs", allowlist=allow, folder="family", is_main=False)
    assert "only for other groups" in reason


def test_no_allowlist_means_no_extra_mounts(tree: Tree) -> None:
    assert "extra mounts are off" in tree.refused("~/projects/docs", allowlist=Allowlist())
    empty = load_allowlist(tree.conf / "missing.toml")
    assert empty.entries == ()
    assert "extra mounts are off" in tree.refused("~/projects/docs", allowlist=empty)


# -- names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["проекты", "My Project", "a.b", "-x", "x" * 65])
def test_odd_basenames_need_a_container_name(tree: Tree, name: str) -> None:
    folder = tree.projects / name
    folder.mkdir()
    assert "set container_name" in tree.refused(str(folder))
    assert tree.one(MountRequest(str(folder), container_name="ok")).container_path == "/workspace/extra/ok"


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".", "..", "x y", "ü"])
def test_bad_container_names(tree: Tree, name: str) -> None:
    assert "is not allowed" in tree.refused(MountRequest("~/projects/docs", container_name=name))


def test_duplicate_names_and_paths(tree: Tree) -> None:
    mounts, refusals = tree.resolve(
        MountRequest("~/projects/docs"),
        MountRequest("~/projects/app", container_name="DOCS"),
        MountRequest("~/projects/docs/", container_name="again"),
    )
    assert [m.container_path for m in mounts] == ["/workspace/extra/docs"]
    assert "already used" in refusals[0].reason
    assert "already mounted" in refusals[1].reason


@pytest.mark.parametrize(
    "path",
    [
        "",
        "   ",
        "relative/path",
        "projects",
        "~nosuchuser/x",
        "/a\x00b",
        "/" + "x" * 5000,
        "~/projects/\nnope",
    ],
)
def test_odd_paths_are_refused_not_raised(tree: Tree, path: str) -> None:
    assert tree.refused(path)


def test_bad_field_types_are_refused(tree: Tree) -> None:
    for request in (
        MountRequest(None),  # type: ignore[arg-type]
        MountRequest(5),  # type: ignore[arg-type]
        MountRequest("~/projects/docs", container_name=3),  # type: ignore[arg-type]
        MountRequest("~/projects/docs", read_write="yes"),  # type: ignore[arg-type]
    ):
        assert tree.refused(request)


# -- the allowlist file -------------------------------------------------------------------------------


def write_allowlist(tree: Tree, text: str, mode: int = 0o644) -> Path:
    tree.allowlist_path.write_text(text)
    os.chmod(tree.allowlist_path, mode)
    return tree.allowlist_path


def test_load_allowlist(tree: Tree) -> None:
    path = write_allowlist(
        tree,
        """
non_main_read_only = false
blocked = ["*.sqlite"]

[[allow]]
path = "~/projects"
read_write = true
groups = ["main", "family"]
description = "code"

[[allow]]
path = "/srv/media"
""",
    )
    allow = load_allowlist(path)
    assert allow.path == path and allow.non_main_read_only is False and allow.blocked == ("*.sqlite",)
    assert allow.entries == (
        AllowEntry(tree.projects, True, ("main", "family"), "code"),
        AllowEntry(Path("/srv/media")),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[allow]\n", "not valid TOML"),
        ("[[allow]]\npath = 'relative'\n", "must be absolute"),
        ("[[allow]]\npath = '/a/../b'\n", "'..'"),
        ("[[allow]]\nread_write = true\n", "path must be a non-empty string"),
        ("[[allow]]\npath = '/x'\nreadwrite = true\n", "did you mean 'read_write'"),
        ("[[allow]]\npath = '/x'\nread_write = 'yes'\n", "read_write must be true or false"),
        ("[[allow]]\npath = '/x'\ngroups = 'main'\n", "groups must be a list"),
        ("[[allow]]\npath = '/x'\ngroups = ['a b']\n", "groups must be a list"),
        ("[[allow]]\npath = '/x'\ndescription = 1\n", "description"),
        ("allow = 3\n", "allow must be a list"),
        ("allow = [1]\n", "must be a table"),
        ("alow = []\n", "did you mean 'allow'"),
        ("non_main_read_only = 1\n", "non_main_read_only"),
        ("blocked = 'x'\n", "blocked must be a list"),
    ],
)
def test_malformed_allowlist(tree: Tree, text: str, expected: str) -> None:
    path = write_allowlist(tree, text)
    with pytest.raises(AllowlistError) as exc:
        load_allowlist(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert expected in str(exc.value) and "\n" not in str(exc.value)


def test_allowlist_writable_by_others_is_refused(tree: Tree) -> None:
    for mode in (0o664, 0o646):
        path = write_allowlist(tree, "", mode)
        with pytest.raises(AllowlistError, match="writable by group or others"):
            load_allowlist(path)
    with pytest.raises(AllowlistError, match="not a regular file"):
        load_allowlist(tree.conf)


# -- property: never raises, never escapes --------------------------------------------------------------


@pytest.fixture(scope="module")
def prop_tree() -> Iterator[Tree]:
    with tempfile.TemporaryDirectory() as d:
        t = Tree(Path(d))
        p = t.projects
        (p / "app" / ".env").write_text("x")
        (p / "up").symlink_to("..")
        (p / "ssh").symlink_to(t.home / ".ssh")
        (p / "out").symlink_to(t.home / "outside")
        (p / "state").symlink_to(t.state)
        (p / "loop").symlink_to(p / "loop")
        (p / "ünï cödé").mkdir()
        (p / "docs" / "self").symlink_to(p / "docs")
        yield t


# Weighted towards paths that exist, so that many examples do produce mounts.
SEGMENTS = st.one_of(
    st.sampled_from(["app", "docs", "src", "self", "up", "ssh", "out", "state", "ünï cödé", "."]),
    st.sampled_from(
        ["..", "", "loop", ".ssh", "id_rsa", ".env", "outside", "groups", "other", "~", "*", "x\x00"]
    ),
)
PREFIXES = st.one_of(
    st.sampled_from(["{projects}/", "~/projects/", "{projects}/docs/", "~/projects/app/src/"]),
    st.sampled_from(["~/", "{root}/", "{home}/", "", "/", "{root}/home/./projects/"]),
)
NAMES = st.one_of(st.none(), st.sampled_from(["a", "A", "docs", "x-1"]), st.text(max_size=6))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(
        st.tuples(
            PREFIXES,
            st.lists(SEGMENTS, max_size=4),
            NAMES,
            st.booleans(),
        ),
        max_size=5,
    ),
    entry_rw=st.booleans(),
    is_main=st.booleans(),
)
def test_resolve_mounts_never_raises_and_never_escapes(
    prop_tree: Tree, monkeypatch: pytest.MonkeyPatch, requests: list, entry_rw: bool, is_main: bool
) -> None:
    t = prop_tree
    monkeypatch.setenv("HOME", str(t.home))
    allow = t.allowlist(AllowEntry(t.projects, read_write=entry_rw))
    reqs = [
        MountRequest(
            prefix.format(root=t.root, home=t.home, projects=t.projects) + "/".join(segments), name, rw
        )
        for prefix, segments, name, rw in requests
    ]
    mounts, refusals = resolve_mounts(reqs, allow, folder="main", is_main=is_main, forbidden_roots=[t.state])
    assert len(mounts) + len(refusals) == len(reqs)
    for refusal in refusals:
        assert isinstance(refusal.reason, str) and refusal.reason
        assert "could not be checked" not in refusal.reason  # no unexpected exception
    names = [m.container_path.lower() for m in mounts]
    assert len(names) == len(set(names))
    for mount in mounts:
        real = mount.host_path
        assert real == real.resolve(strict=True)
        assert real == t.projects or t.projects in real.parents
        assert not (real == t.state or t.state in real.parents)
        assert blocked_match(real.relative_to(t.home).parts, BLOCKED_PATTERNS) is None
        assert mount.container_path.startswith("/workspace/extra/")
        assert "/" not in mount.container_path.removeprefix("/workspace/extra/")
        if not (entry_rw and is_main):
            assert mount.read_only
