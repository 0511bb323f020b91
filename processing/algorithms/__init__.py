# SPDX-License-Identifier: GPL-2.0-or-later
"""One module per algorithm; each reads parameters, calls the pure core and writes the sinks."""
