"""HTTP routes of the security auditor's review: search, entry detail, CSV export, anomalies, console."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
