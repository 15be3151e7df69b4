"""The roll policies of the access logs: one parser (router/telemetry/access_log.py) for the
routers' `httpAccessLog*`/`h2AccessLog*` and namerd's `io.l5d.mesh` `h2AccessLog*`."""

from __future__ import annotations

import logging.handlers
from pathlib import Path

import pytest

from namerd import access_log as namerd_log
from router.telemetry.access_log import parse_roll_policy


def test_one_parser_for_every_access_log() -> None:
    assert parse_roll_policy("Daily") == ("daily", None)
    assert parse_roll_policy("sunday") == ("sunday", None)
    assert parse_roll_policy("3.megabytes") == ("3.megabytes", 3 << 20)
    assert parse_roll_policy("1.gigabyte") == ("1.gigabyte", 1 << 30)
    with pytest.raises(ValueError, match="weekly-ish"):
        parse_roll_policy("weekly-ish")
    with pytest.raises(ValueError, match="above 0"):
        parse_roll_policy("0.bytes")


@pytest.mark.parametrize(("policy", "handler", "when"), [
    ("never", logging.FileHandler, None),
    ("hourly", logging.handlers.TimedRotatingFileHandler, "H"),
    ("daily", logging.handlers.TimedRotatingFileHandler, "MIDNIGHT"),
    ("sunday", logging.handlers.TimedRotatingFileHandler, "W6"),  # weekly, as the routers'
    ("2.kilobytes", logging.handlers.RotatingFileHandler, None),
])
def test_namerd_h2_access_log_rolls_by_the_shared_policies(tmp_path: Path, policy: str,
                                                           handler: type, when: str | None
                                                           ) -> None:
    name, max_bytes = parse_roll_policy(policy)
    cfg = namerd_log.AccessLogConfig(str(tmp_path / "mesh.log"), name, True, 2, max_bytes)
    logger = namerd_log.open_logger(cfg, "test")
    try:
        (h,) = logger.handlers
        assert type(h) is handler
        if when is not None:
            assert h.when == when  # type: ignore[attr-defined]
        if max_bytes is not None:
            assert h.maxBytes == 2048  # type: ignore[attr-defined]
        logger.info(namerd_log.line("namerd:4321", "127.0.0.1", "/io.linkerd.mesh.X/Y", "ua"))
    finally:
        namerd_log.close(logger)
    assert '"POST /io.linkerd.mesh.X/Y HTTP/2" 200 - "-" "ua"' in (tmp_path / "mesh.log"
                                                                  ).read_text()
