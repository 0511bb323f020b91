# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311: 311 service requests, precincts and outreach for QGIS."""


def classFactory(iface):  # noqa: N802 - QGIS plugin entry point
    from .plugin import Civic311Plugin

    return Civic311Plugin(iface)
