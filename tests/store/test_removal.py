"""``store.removal``: nothing is removed outside the folder made for it, links included."""

from __future__ import annotations

from pathlib import Path

import pytest
from dropsync.store.errors import OutsideFolder
from dropsync.store.removal import remove_inside


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """(the purpose folder, a folder beside it holding a file that must survive)."""
    spool, outside = tmp_path / "spool", tmp_path / "outside"
    spool.mkdir()
    outside.mkdir()
    (outside / "keep.json").write_text("precious")
    return spool, outside


def survived(outside: Path) -> bool:
    return (outside / "keep.json").read_text() == "precious"


def test_a_folder_inside_is_removed_with_what_is_in_it(places: tuple[Path, Path]) -> None:
    spool, outside = places
    (spool / "crm/1").mkdir(parents=True)
    (spool / "crm/1/a.json").write_text("[]")
    (spool / "crm/link").symlink_to(outside)  # a link inside: removed, not followed
    assert remove_inside(spool / "crm", spool) is True
    assert not (spool / "crm").exists() and survived(outside)
    assert remove_inside(spool / "crm", spool) is False  # nothing left to remove


@pytest.mark.parametrize("name", ["..", ".", "../outside", "../outside/keep.json", "/"])
def test_a_target_that_is_not_strictly_inside_is_refused(
    places: tuple[Path, Path], name: str
) -> None:
    spool, outside = places
    with pytest.raises(OutsideFolder, match="not inside"):
        remove_inside(spool / name, spool)
    assert spool.is_dir() and survived(outside)


def test_a_link_in_the_folder_is_removed_itself_never_what_it_points_to(
    places: tuple[Path, Path],
) -> None:
    spool, outside = places
    (spool / "churn").symlink_to(outside)
    assert remove_inside(spool / "churn", spool) is True
    assert not (spool / "churn").is_symlink() and survived(outside)


def test_a_path_through_a_link_that_leads_outside_is_refused(places: tuple[Path, Path]) -> None:
    spool, outside = places
    (spool / "churn").symlink_to(outside)
    with pytest.raises(OutsideFolder, match=str(outside)):
        remove_inside(spool / "churn" / "keep.json", spool)
    assert survived(outside)
