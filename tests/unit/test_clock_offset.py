"""The test-only clock that a file moves (`ADGANG_<SERVICE>_CLOCK_OFFSET_FILE`): every process of a
suite reads the same offset, and production refuses the setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.identity.config import IdentitySettings
from services.portal.config import PortalSettings
from shared.clock import OffsetFileClock, SystemClock


def test_the_clock_moves_by_the_offset_in_the_file_and_a_missing_or_empty_file_is_no_offset(tmp_path: Path) -> None:
    offset = tmp_path / "clock-offset"
    clock = OffsetFileClock(offset)
    before = datetime.now(UTC)
    assert before <= clock.now() <= datetime.now(UTC)
    offset.write_text("")
    assert clock.now() <= datetime.now(UTC)
    offset.write_text("259200")
    moved = clock.now()
    assert before + timedelta(hours=72) <= moved <= datetime.now(UTC) + timedelta(hours=72)


def test_a_service_uses_the_moved_clock_only_when_the_setting_names_a_file(tmp_path: Path) -> None:
    assert isinstance(IdentitySettings(var_dir=tmp_path).clock(), SystemClock)
    moved = IdentitySettings(var_dir=tmp_path, clock_offset_file=tmp_path / "offset").clock()
    assert isinstance(moved, OffsetFileClock)


@pytest.mark.parametrize("settings_type", [IdentitySettings, PortalSettings])
def test_production_refuses_a_moved_clock(settings_type, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="clock_offset_file"):
        settings_type.model_validate(
            {"environment": "production", "clock_offset_file": str(tmp_path / "offset"), "database_url": "x"}
        )
