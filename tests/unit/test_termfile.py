"""A paired broker's durable identity files (broker.termfile), in a temporary directory."""

from __future__ import annotations

from pathlib import Path

from xlmate.broker.termfile import load_member, load_term, next_boot, store_term


def test_boots_count_every_start_and_never_go_back(
    tmp_path: Path,
) -> None:
    """next_boot returns 1, 2, 3 on successive starts; after garbage in the file it goes
    on above any count (never back: discovery would ignore its heartbeats)."""
    assert [next_boot(tmp_path) for _ in range(3)] == [1, 2, 3]
    assert (tmp_path / "boots").read_text() == "3\n"
    (tmp_path / "boots").write_text("x\n")
    after = next_boot(tmp_path)
    assert after > 1_000_000_000 and next_boot(tmp_path) == after + 1


def test_term_and_member_survive_a_restart(tmp_path: Path) -> None:
    """The stored term and the member id read back the same (term 0 when absent)."""
    assert load_term(tmp_path) == 0
    store_term(tmp_path, 7)
    assert load_term(tmp_path) == 7
    member = load_member(tmp_path)
    assert load_member(tmp_path) == member and len(member) == 12
