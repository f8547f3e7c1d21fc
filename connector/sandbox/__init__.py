"""A local stand-in for the outside world: sample data now, API emulation next."""
