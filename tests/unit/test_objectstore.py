"""The spool object store: versioned objects under a directory."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from ingest.adapters import spool
from ingest.adapters.spool import SpoolObjectStore
from ingest.contracts.ports import (
    ObjectBusy,
    ObjectMissing,
    ObjectStoreError,
    ObjectSuperseded,
    StoredObject,
)

KEY = "1.2.3/1.2.3.4/1.2.3.4.5.dcm"


@pytest.fixture
def store(tmp_path: Path) -> SpoolObjectStore:
    return SpoolObjectStore(tmp_path / "spool")


def stage(store: SpoolObjectStore, data: bytes, name: str = "staged.part") -> Path:
    path = store.staging_dir() / name
    path.write_bytes(data)
    return path


def put(store: SpoolObjectStore, data: bytes, key: str = KEY) -> StoredObject:
    """Put and commit, as the receiver does once the message is in the queue."""
    stored = store.put(key, stage(store, data), len(data), "crc==")
    store.commit(stored)
    return stored


def test_previous_generation_stays_until_commit(store: SpoolObjectStore) -> None:
    first = put(store, b"version one")
    second = store.put(KEY, stage(store, b"version two"), 11, "crc==")
    assert second.previous == first.generation
    # Until the new version's message is committed, the old one is busy, not superseded:
    # if the commit fails, it becomes current again and its own message must still work.
    with pytest.raises(ObjectBusy):
        store.open(first.uri, first.generation)
    assert (store.root / "1.2.3" / "1.2.3.4" / f"1.2.3.4.5@{first.generation}.dcm").exists()
    store.commit(second)
    assert not (store.root / "1.2.3" / "1.2.3.4" / f"1.2.3.4.5@{first.generation}.dcm").exists()
    with pytest.raises(ObjectSuperseded):
        store.open(first.uri, first.generation)


def test_rollback_restores_the_previous_generation(store: SpoolObjectStore) -> None:
    first = put(store, b"version one")
    second = store.put(KEY, stage(store, b"version two"), 11, "crc==")
    store.rollback(second)
    assert read(store, first) == b"version one"  # the first message still finds its bytes
    with pytest.raises(ObjectMissing):
        store.open(second.uri, second.generation)


def test_rollback_of_a_first_version_removes_the_object(store: SpoolObjectStore) -> None:
    only = store.put(KEY, stage(store, b"only"), 4, "crc==")
    store.rollback(only)
    with pytest.raises(ObjectMissing):
        store.open(only.uri, only.generation)
    assert not (store.root / KEY).is_symlink()


def test_two_failed_stores_restore_the_last_committed_version(store: SpoolObjectStore) -> None:
    committed = put(store, b"committed")
    a = store.put(KEY, stage(store, b"a"), 1, "crc==")
    b = store.put(KEY, stage(store, b"b"), 1, "crc==")
    store.rollback(a)  # a is no longer current: only its file goes
    store.rollback(b)  # b is current: the newest older version left is the committed one
    assert read(store, committed) == b"committed"


def test_reserve_creates_the_file_so_delete_keeps_its_directory(store: SpoolObjectStore) -> None:
    only = put(store, b"uploaded")
    reserved = store.reserve("1.2.3/1.2.3.4/1.2.3.4.6.dcm")
    assert reserved.exists()
    assert store.delete(only.uri, only.generation)
    assert reserved.parent.is_dir()  # not removed under the receiver's feet


def test_plain_files_in_the_spool_are_not_objects(store: SpoolObjectStore) -> None:
    kept = put(store, b"kept")
    stray = store.root / "1.2.3" / "1.2.3.4" / "notes.dcm"
    stray.write_bytes(b"somebody's file")
    assert [s.uri for s, _ in store.current_objects()] == [kept.uri]
    store.prune()
    assert stray.exists()


def test_rollback_leaves_a_newer_concurrent_version_alone(store: SpoolObjectStore) -> None:
    put(store, b"version one")
    second = store.put(KEY, stage(store, b"version two"), 11, "crc==")
    third = store.put(KEY, stage(store, b"version three"), 13, "crc==")
    store.rollback(second)
    assert read(store, third) == b"version three"


def read(store: SpoolObjectStore, stored: StoredObject) -> bytes:
    with store.open(stored.uri, stored.generation) as handle:
        return handle.read()


def test_layout(tmp_path: Path) -> None:
    store = SpoolObjectStore(tmp_path / "spool")
    assert store.root == (tmp_path / "spool" / "objects").resolve()
    assert store.staging_dir() == (tmp_path / "spool" / "incoming").resolve()
    assert store.root.is_dir()
    assert store.staging_dir().is_dir()


def test_put_then_open_returns_exact_bytes(store: SpoolObjectStore) -> None:
    data = bytes(range(256)) * 40 + b"\x00\r\n"
    staged = stage(store, data)
    stored = store.put(KEY, staged, len(data), "AAAAAA==")
    assert not staged.exists()  # consumed
    assert stored.uri == store.uri_for(KEY)
    assert stored.uri.startswith("file://")
    assert stored.generation.isdigit()
    assert (stored.size, stored.crc32c) == (len(data), "AAAAAA==")
    assert read(store, stored) == data


def test_second_put_supersedes_the_first(store: SpoolObjectStore) -> None:
    first = put(store, b"version one")
    second = put(store, b"version two")
    assert second.uri == first.uri
    assert int(second.generation) > int(first.generation)
    assert read(store, second) == b"version two"
    with pytest.raises(ObjectSuperseded):
        store.open(first.uri, first.generation)
    # Only the current version stays on disk, named by the object's link.
    files = sorted(f.name for f in (store.root / "1.2.3" / "1.2.3.4").iterdir())
    assert files == ["1.2.3.4.5.dcm", f"1.2.3.4.5@{second.generation}.dcm"]
    link = store.root / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    version = link.with_name(f"1.2.3.4.5@{second.generation}.dcm")
    assert link.read_bytes() == b"version two"
    assert link.stat().st_ino == version.stat().st_ino  # a hard link: no inode of its own


def test_a_first_version_takes_one_inode(store: SpoolObjectStore) -> None:
    stored = put(store, b"only")
    link = store.root / KEY
    version = link.with_name(f"1.2.3.4.5@{stored.generation}.dcm")
    assert not link.is_symlink()
    assert link.stat().st_ino == version.stat().st_ino
    assert link.stat().st_nlink == 2


def test_objects_linked_by_an_earlier_release_still_work(store: SpoolObjectStore) -> None:
    """Spools written with symbolic links: read, replaced, listed, pruned and deleted."""
    series = store.root / "1.2.3" / "1.2.3.4"
    series.mkdir(parents=True)
    (series / "1.2.3.4.5@100.dcm").write_bytes(b"old release")
    (series / "1.2.3.4.5.dcm").symlink_to("1.2.3.4.5@100.dcm")
    (series / "1.2.3.4.6@200.dcm").write_bytes(b"old release too")
    (series / "1.2.3.4.6.dcm").symlink_to("1.2.3.4.6@200.dcm")
    uri = store.uri_for(KEY)
    assert read(store, StoredObject(uri, "100", 11, "")) == b"old release"
    assert sorted(s.generation for s, _ in store.current_objects()) == ["100", "200"]
    assert store.prune() == 0
    newer = put(store, b"new release")
    assert newer.previous == "100"
    with pytest.raises(ObjectSuperseded):
        store.open(uri, "100")
    assert not (series / "1.2.3.4.5.dcm").is_symlink()
    assert read(store, newer) == b"new release"
    other = store.uri_for("1.2.3/1.2.3.4/1.2.3.4.6.dcm")
    assert store.delete(other, "200")
    assert sorted(p.name for p in series.iterdir()) == [
        "1.2.3.4.5.dcm",
        f"1.2.3.4.5@{newer.generation}.dcm",
    ]


def test_the_generation_a_link_names_is_found_among_many(store: SpoolObjectStore) -> None:
    """An instance received again in a large series: the old generation is found by inode."""
    for n in range(50):
        put(store, b"x", f"1.2.3/1.2.3.4/1.2.3.4.{100 + n}.dcm")
    first = put(store, b"one")
    second = store.put(KEY, stage(store, b"two"), 3, "crc==")
    assert second.previous == first.generation
    store.rollback(second)
    assert read(store, first) == b"one"


def test_delete_removes_emptied_series_and_study_directories(store: SpoolObjectStore) -> None:
    stored = put(store, b"only one")
    assert store.delete(stored.uri, stored.generation)
    assert list(store.root.iterdir()) == []
    with pytest.raises(ObjectMissing):
        store.open(stored.uri, stored.generation)


def test_generations_increase_across_many_puts(store: SpoolObjectStore) -> None:
    generations = [int(put(store, f"v{n}".encode()).generation) for n in range(20)]
    assert generations == sorted(set(generations))


def test_other_keys_are_independent(store: SpoolObjectStore) -> None:
    a = put(store, b"a", "1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    b = put(store, b"b", "1.2.3/1.2.3.4/1.2.3.4.50.dcm")  # a longer SOP UID with a common prefix
    assert read(store, a) == b"a"
    assert read(store, b) == b"b"


def test_open_unknown_key_is_missing(store: SpoolObjectStore) -> None:
    with pytest.raises(ObjectMissing):
        store.open(store.uri_for("9.9/9.9.9/9.9.9.9.dcm"), "1")


def test_open_unknown_newer_generation_is_missing(store: SpoolObjectStore) -> None:
    stored = put(store, b"x")
    with pytest.raises(ObjectMissing):
        store.open(stored.uri, str(int(stored.generation) + 1))


def test_missing_and_superseded_are_object_store_errors() -> None:
    assert issubclass(ObjectMissing, ObjectStoreError)
    assert issubclass(ObjectSuperseded, ObjectStoreError)


def test_delete_only_the_current_generation(store: SpoolObjectStore) -> None:
    first = put(store, b"one")
    second = put(store, b"two")
    assert store.delete(first.uri, first.generation) is False
    assert read(store, second) == b"two"
    assert store.delete(second.uri, second.generation) is True
    with pytest.raises(ObjectMissing):
        store.open(second.uri, second.generation)
    assert store.delete(second.uri, second.generation) is False


def test_delete_unknown_object(store: SpoolObjectStore) -> None:
    assert store.delete(store.uri_for("9.9/9.9.9/9.9.9.9.dcm"), "5") is False


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "file:///tmp/elsewhere/1.2.3.dcm",
        "gs://bucket/1.2.3/1.2.3.4/1.2.3.4.5.dcm",
        "https://example.com/1.dcm",
    ],
)
def test_uri_outside_the_spool_is_refused(store: SpoolObjectStore, uri: str) -> None:
    with pytest.raises(ObjectStoreError):
        store.open(uri, "1")
    with pytest.raises(ObjectStoreError):
        store.delete(uri, "1")


def test_uri_escaping_the_spool_with_dot_dot_is_refused(store: SpoolObjectStore) -> None:
    escaping = store.root.as_uri() + "/../incoming/secret.dcm"
    with pytest.raises(ObjectStoreError, match="outside"):
        store.open(escaping, "1")


def test_a_sibling_directory_named_like_the_root_is_outside(store: SpoolObjectStore) -> None:
    sibling = store.root.with_name(store.root.name + "-other") / "a" / "b" / "c.dcm"
    with pytest.raises(ObjectStoreError, match="outside"):
        store.open(sibling.as_uri(), "1")


def test_spool_root_itself_is_refused(store: SpoolObjectStore) -> None:
    with pytest.raises(ObjectStoreError):
        store.open(store.root.as_uri(), "1")


@pytest.mark.parametrize("key", ["../escape.dcm", "a/../../escape.dcm", "/etc/x.dcm"])
def test_put_refuses_keys_escaping_the_spool(store: SpoolObjectStore, key: str) -> None:
    staged = stage(store, b"x")
    with pytest.raises(ObjectStoreError):
        store.put(key, staged, 1, "crc==")
    assert staged.exists()


def test_clear_staging_removes_files(store: SpoolObjectStore) -> None:
    for n in range(3):
        stage(store, b"left over", f"leftover{n}.part")
    (store.staging_dir() / "a-directory").mkdir()
    assert store.clear_staging() == 3
    assert [p.name for p in store.staging_dir().iterdir()] == ["a-directory"]
    assert store.clear_staging() == 0


def test_clear_staging_leaves_stored_objects(store: SpoolObjectStore) -> None:
    stored = put(store, b"kept")
    stage(store, b"junk")
    assert store.clear_staging() == 1
    assert read(store, stored) == b"kept"


def test_a_new_store_on_the_same_spool_sees_objects(tmp_path: Path) -> None:
    first = SpoolObjectStore(tmp_path / "spool")
    stored = put(first, b"persisted")
    second = SpoolObjectStore(tmp_path / "spool")
    assert read(second, stored) == b"persisted"
    newer = put(second, b"newer")
    assert int(newer.generation) > int(stored.generation)
    with pytest.raises(ObjectSuperseded):
        first.open(stored.uri, stored.generation)


def test_reserved_version_is_written_in_place(store: SpoolObjectStore) -> None:
    path = store.reserve(KEY)
    assert path.parent == store.root / "1.2.3" / "1.2.3.4"
    path.write_bytes(b"written in place")
    stored = store.put(KEY, path, 16, "crc==")
    assert path.name == f"1.2.3.4.5@{stored.generation}.dcm"
    assert read(store, stored) == b"written in place"


def test_overtaken_reservation_becomes_the_newest(store: SpoolObjectStore) -> None:
    slow, fast = store.reserve(KEY), store.reserve(KEY)
    fast.write_bytes(b"fast")
    slow.write_bytes(b"slow")
    first = store.put(KEY, fast, 4, "crc==")
    store.commit(first)
    second = store.put(KEY, slow, 4, "crc==")
    store.commit(second)
    assert int(second.generation) > int(first.generation)
    assert second.previous == first.generation
    assert read(store, second) == b"slow"
    with pytest.raises(ObjectSuperseded):
        store.open(first.uri, first.generation)


def test_prune_removes_an_abandoned_reservation(store: SpoolObjectStore) -> None:
    kept = put(store, b"kept")
    store.reserve(KEY).write_bytes(b"half written before a crash")
    assert store.prune() == 1
    assert read(store, kept) == b"kept"


def test_put_that_cannot_be_made_durable_leaves_the_previous_version_current(
    store: SpoolObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = put(store, b"durable")
    staged = stage(store, b"never durable")

    def failing_fsync_dir(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(spool, "_fsync_dir", failing_fsync_dir)
    with pytest.raises(OSError):
        store.put(KEY, staged, 13, "crc==")
    monkeypatch.undo()
    assert read(store, first) == b"durable"


def test_reserve_outside_the_lock_survives_its_directory_being_removed(
    store: SpoolObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is created outside the store's lock: when a delete empties and removes the
    series directory just before, the directory is made again and the file created."""
    only = put(store, b"uploaded", "1.2.3/1.2.3.4/1.2.3.4.6.dcm")
    real = spool.create_private_file
    calls: list[Path] = []

    def deleted_first(path: Path) -> int:
        if not calls:
            assert store.delete(only.uri, only.generation)  # removes series and study dirs
        calls.append(path)
        return real(path)

    monkeypatch.setattr(spool, "create_private_file", deleted_first)
    reserved = store.reserve(KEY)
    assert reserved.exists() and len(calls) == 2
    stored = store.put(KEY, reserved, 0, "crc==")
    assert read(store, stored) == b""


def test_threads_linking_into_one_directory_share_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: a change is covered by an fsync that began after it; threads that wait
    together need one between them, and none returns before its change is covered."""
    began: list[int] = []
    gate = threading.Event()
    directory = spool._DirectorySync(tmp_path)

    def slow_fsync(path: Path) -> None:
        began.append(directory._changes)  # what this fsync covers
        gate.wait(5)

    monkeypatch.setattr(spool, "_fsync_dir", slow_fsync)
    first = directory.note()
    leader = threading.Thread(target=directory.sync, args=(first,))
    leader.start()
    while not began:
        time.sleep(0.001)
    changes = [directory.note() for _ in range(6)]  # made while the first fsync runs
    waiters = [threading.Thread(target=directory.sync, args=(c,)) for c in changes]
    for thread in waiters:
        thread.start()
    gate.set()
    for thread in [leader, *waiters]:
        thread.join(5)
        assert not thread.is_alive()
    assert began == [1, 7]  # one for the first change, one for the six made during it


def test_a_failed_shared_fsync_fails_the_changes_it_had_to_cover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = spool._DirectorySync(tmp_path)

    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(spool, "_fsync_dir", broken)
    with pytest.raises(OSError):
        directory.sync(directory.note())
    monkeypatch.setattr(spool, "_fsync_dir", lambda path: None)
    directory.sync(directory.note())  # the next one succeeds and covers both


def test_a_spool_copied_without_its_hard_links_loses_nothing(tmp_path: Path) -> None:
    """``rsync -a`` without ``-H`` (or ``cp -r``) makes each link a separate copy: objects
    still open, are listed and deleted; prune makes the links again and removes nothing."""
    original = SpoolObjectStore(tmp_path / "a")
    first = put(original, b"instance one", "1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    second = put(original, b"instance two!", "1.2.3/1.2.3.4/1.2.3.4.6.dcm")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # files copied one by one
    store = SpoolObjectStore(tmp_path / "b")
    series = store.root / "1.2.3" / "1.2.3.4"
    assert (series / "1.2.3.4.5.dcm").stat().st_nlink == 1  # no longer a hard link
    uri = store.uri_for("1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    assert read(store, StoredObject(uri, first.generation, 12, "")) == b"instance one"
    assert sorted(s.generation for s, _ in store.current_objects()) == sorted(
        [first.generation, second.generation]
    )
    assert store.prune() == 0
    assert (series / "1.2.3.4.5.dcm").stat().st_nlink == 2  # linked again
    assert store.delete(uri, first.generation)
    assert sorted(p.name for p in series.iterdir()) == [
        "1.2.3.4.6.dcm",
        f"1.2.3.4.6@{second.generation}.dcm",
    ]


def test_prune_keeps_the_versions_of_an_object_it_cannot_tell(store: SpoolObjectStore) -> None:
    """A link that is neither a hard link nor a copy of its one version: nothing is removed."""
    series = store.root / "1.2.3" / "1.2.3.4"
    series.mkdir(parents=True)
    (series / "1.2.3.4.5@100.dcm").write_bytes(b"one")
    (series / "1.2.3.4.5@200.dcm").write_bytes(b"two")
    (series / "1.2.3.4.5.dcm").write_bytes(b"two")  # a copy of one of two versions
    assert store.prune() == 0
    assert len(list(series.iterdir())) == 3
    assert list(store.current_objects()) == []


def test_a_moved_spool_adopts_the_uris_its_queue_holds(tmp_path: Path) -> None:
    """A spool moved elsewhere: each URI of its old place names the same object here."""
    old = SpoolObjectStore(tmp_path / "old")
    stored = put(old, b"DICM")
    (tmp_path / "old").rename(tmp_path / "new")
    new = SpoolObjectStore(tmp_path / "new")
    adopted = new.adopt_uri(stored.uri)
    assert adopted == new.uri_for(KEY) != stored.uri
    with new.open(adopted, stored.generation) as handle:
        assert handle.read() == b"DICM"
    assert new.adopt_uri(adopted) is None  # already this spool's
    assert adopted.startswith(new.uri_prefix) and not stored.uri.startswith(new.uri_prefix)
    for other in (
        "gs://bucket/dicom/1.2/1.3/1.4.dcm",  # not a spool's
        "file:///elsewhere/1.2/1.3/1.4.dcm",  # no objects directory
        "file:///elsewhere/objects/1.2/1.3/1.4.txt",
        "file:///elsewhere/objects/1.2/../1.4.dcm",
        "file:///elsewhere/objects/1.2/%2E%2E/1.4.dcm",
    ):
        assert new.adopt_uri(other) is None, other
