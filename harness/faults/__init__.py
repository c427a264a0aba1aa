"""Faults: seeded schedules (`schedule.py`) and what carries them out on the real system
(`controller.py`: process faults through the server supervisor, one episode at a time)."""
