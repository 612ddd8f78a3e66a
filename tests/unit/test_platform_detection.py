"""API.md's plugin identity rules: headers, legacy headers, User-Agent variants, else unknown."""

import pytest

from services.gateway.platform import PluginIdentity, detect_plugin


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-plugin-platform": "sketchup", "x-plugin-version": "1.4.2"}, PluginIdentity("sketchup", "1.4.2")),
        ({"x-plugin-platform": "Revit", "x-plugin-version": "2.0.0"}, PluginIdentity("revit", "2.0.0")),
        ({"x-plugin-platform": "BLENDER"}, PluginIdentity("blender", None)),
        ({"x-renderiq-platform": "rhino", "x-renderiq-plugin-version": "0.9.1"}, PluginIdentity("rhino", "0.9.1")),
        (
            {"x-plugin-platform": "archicad", "x-renderiq-platform": "revit", "x-plugin-version": "3.1"},
            PluginIdentity("archicad", "3.1"),
        ),
        # An unknown name in the new header does not hide a valid legacy header.
        ({"x-plugin-platform": "maya", "x-renderiq-platform": "autocad"}, PluginIdentity("autocad", None)),
        ({"user-agent": "Renderiq-Plugin/SketchUp/1.4.2"}, PluginIdentity("sketchup", "1.4.2")),
        ({"user-agent": "Renderiq-Plugin/AutoCAD/2.3.0 (Windows NT 10.0)"}, PluginIdentity("autocad", "2.3.0")),
        ({"user-agent": "renderiq-plugin/blender"}, PluginIdentity("blender", None)),
        ({"user-agent": "SketchUp/23.1.340 (Mac)"}, PluginIdentity("sketchup", "23.1.340")),
        ({"user-agent": "Autodesk Revit 2024 Add-in"}, PluginIdentity("revit", "2024")),
        ({"user-agent": "Rhinoceros 8 RhinoCommon"}, PluginIdentity("rhino", "8")),
        ({"user-agent": "Mozilla/5.0 Blender/4.1.0"}, PluginIdentity("blender", "4.1.0")),
        ({"user-agent": "GRAPHISOFT ARCHICAD 27"}, PluginIdentity("archicad", "27")),
        ({"user-agent": "curl/8.5.0"}, PluginIdentity("unknown", None)),
        ({}, PluginIdentity("unknown", None)),
        ({"x-plugin-platform": "", "user-agent": ""}, PluginIdentity("unknown", None)),
        # A version that is not a version (injection, absurd length) is dropped, the platform kept.
        ({"x-plugin-platform": "revit", "x-plugin-version": "1.0\r\nX: y"}, PluginIdentity("revit", None)),
        ({"x-plugin-platform": "revit", "x-plugin-version": "9" * 64}, PluginIdentity("revit", None)),
    ],
)
def test_detect_plugin(headers: dict[str, str], expected: PluginIdentity) -> None:
    assert detect_plugin(headers) == expected
