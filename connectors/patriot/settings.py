"""Patriot export target settings: where the files go and when a period's files are sealed."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class PatriotSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Files land in <export_dir>/<target>/ (the bookkeeper imports them in Patriot's import wizards).
    export_dir: Path
    # A period's files are sealed this long after its window opens, so the backlog the sink delivers at the
    # opening is in them; whatever is recorded later goes into the next period's files (never lost).
    settle_seconds: float = Field(120.0, ge=0)
    # How often the exporter looks for a period to seal and for sealed files still to write.
    poll_seconds: float = Field(10.0, gt=0)
    # Patriot's documented import limit (rows per file, header excluded) and field length.
    rows_per_file: int = Field(200, ge=1, le=200)
    max_field_chars: int = Field(50, ge=1, le=50)
