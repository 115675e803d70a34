"""Local development stack: the emulators, the Cademi simulator and the functions, wired like the cloud;
the weekly job, replay, soak and bench commands run on it."""
