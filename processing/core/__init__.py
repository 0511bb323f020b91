# SPDX-License-Identifier: GPL-2.0-or-later
"""Pure analysis core of civic311: numpy/scipy/pandas only, never imports qgis.

Every statistic the plugin reports is computed here, so it can be tested (and reused) without QGIS.
"""
