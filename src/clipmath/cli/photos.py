"""The photo-library options of ``clipmath search``: one option per field of :class:`QueryControls` (generated from
the dataclass, never listed by hand), and how a result's photo metadata is shown."""

from __future__ import annotations

from typing import Any

from clipmath.cli.settings import with_settings
from clipmath.store.filters import QueryControls

#: Decorates a command taking ``controls: QueryControls``: it is exposed with one option per field instead.
with_query_controls = with_settings(QueryControls, "controls")


def shown_id(item_id: str, meta: Any) -> str:
    """A result's id as shown: a video frame as ``trips/beach.mp4 at 0:12.5``."""
    if meta is None or getattr(meta, "video", None) is None or meta.time is None:
        return item_id
    minutes, seconds = divmod(meta.time, 60)
    hours, minutes = divmod(int(minutes), 60)
    clock = f"{hours}:{minutes:02d}:{seconds:04.1f}" if hours else f"{minutes}:{seconds:04.1f}"
    return f"{meta.video} at {clock}"


def describe(meta: Any) -> str:
    """One line about a result's photo: date taken, camera, size, place."""
    if meta is None:
        return ""
    parts = [meta.taken[:16].replace("T", " ") + ("" if meta.taken_from in ("exif", "video") else " (file)")]
    if meta.camera:
        parts.append(meta.camera)
    if meta.width and meta.height:
        parts.append(f"{meta.width}x{meta.height}")
    if meta.gps:
        parts.append(f"{meta.gps[0]:.4f},{meta.gps[1]:.4f}")
    return " · ".join(parts)


def page_facts(page: Any) -> dict:
    """What ``--json`` says about a page beyond its hits: whether it is complete and how deep the search went."""
    return {"passed": page.passed, "complete": page.complete, "exhausted": page.exhausted,
            "searched_depth": page.searched_depth, "exact_fallback": page.exact_fallback}  # fmt: skip


def page_note(page: Any) -> str:
    if page.exact_fallback:
        return "filtered rows scored exactly (the index could not reach them all)"
    if page.exhausted:
        return f"all {page.passed} matches" if page.passed < 10**6 else "every match"
    return f"top {page.searched_depth} searched"


def summary_rows(photos: dict) -> list[tuple[str, Any]]:
    """``info`` rows about the photos: dates, cameras, GPS, folders, items awaiting their metadata."""
    cameras = ", ".join(f"{name} ({n})" for name, n in list(photos["cameras"].items())[:5]) or "none recorded"
    rows = [
        ("taken", f"{photos['first_taken'] or '-'} .. {photos['last_taken'] or '-'}"),
        ("dated by EXIF", photos["dated_by_exif"]),
        ("with GPS", photos["with_gps"]),
        ("cameras", cameras),
        ("folders", photos["folders"]),
    ]
    if photos.get("videos"):
        rows.append(("videos", f"{photos['videos']} ({photos['video_frames']} frames)"))
    if photos["awaiting_metadata"]:
        rows.append(("awaiting metadata", f"{photos['awaiting_metadata']} (run clipmath index again to read them)"))
    return rows
