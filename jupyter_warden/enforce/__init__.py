"""Enforcement points: where requests meet the warden's rules.

Each module here collects facts about one channel and refuses what the
rules refuse; none of them invents a rule of its own.
"""
