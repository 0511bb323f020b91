# SPDX-License-Identifier: GPL-2.0-or-later
"""Processing provider, algorithms, QGIS glue and the pure analysis core (``core``)."""
