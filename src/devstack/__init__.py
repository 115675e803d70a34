"""Local development stack: starts the simulator (and, later, the emulators) and runs the weekly job."""
