# SPDX-License-Identifier: GPL-2.0-or-later
"""Docks and dialogs (thin: no analysis logic here)."""
