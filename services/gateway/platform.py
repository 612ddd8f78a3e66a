"""Which CAD plugin is calling: explicit headers, then the legacy headers, then the User-Agent, else ``unknown``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

PLATFORMS = ("sketchup", "revit", "autocad", "rhino", "archicad", "blender")
UNKNOWN = "unknown"

# Host application names as they appear in User-Agents, mapped to the platform.
_HOST_NAMES: dict[str, str] = {
    "sketchup": "sketchup",
    "revit": "revit",
    "autocad": "autocad",
    "acad": "autocad",
    "rhinoceros": "rhino",
    "rhino": "rhino",
    "archicad": "archicad",
    "blender": "blender",
}
_PLUGIN_UA = re.compile(r"renderiq-plugin/([a-z0-9_-]+)(?:/([0-9A-Za-z.+_-]+))?", re.IGNORECASE)
_HOST_UA = re.compile(
    r"\b(sketchup|revit|autocad|acad|rhinoceros|rhino|archicad|blender)\b(?:[/ ]v?([0-9][0-9A-Za-z.+_-]*))?",
    re.IGNORECASE,
)
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,31}$")


@dataclass(frozen=True, slots=True)
class PluginIdentity:
    platform: str = UNKNOWN
    version: str | None = None


def normalize_platform(value: str | None) -> str | None:
    if not value:
        return None
    lowered = value.strip().lower()
    return _HOST_NAMES.get(lowered, lowered if lowered in PLATFORMS else None)


def clean_version(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    return value if _VERSION.match(value) else None


def detect_plugin(headers: Mapping[str, str]) -> PluginIdentity:
    """Apply API.md's order; an unrecognised platform name counts as absent and the next source is tried."""
    for platform_header, version_header in (
        ("x-plugin-platform", "x-plugin-version"),
        ("x-renderiq-platform", "x-renderiq-plugin-version"),
    ):
        platform = normalize_platform(headers.get(platform_header))
        if platform:
            return PluginIdentity(platform, clean_version(headers.get(version_header)))
    user_agent = headers.get("user-agent", "")
    if user_agent:
        match = _PLUGIN_UA.search(user_agent)
        if match and (platform := normalize_platform(match.group(1))):
            return PluginIdentity(platform, clean_version(match.group(2)))
        match = _HOST_UA.search(user_agent)
        if match and (platform := normalize_platform(match.group(1))):
            return PluginIdentity(platform, clean_version(match.group(2)))
    return PluginIdentity()
