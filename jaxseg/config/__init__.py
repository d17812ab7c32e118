"""Configuration: the base config (each subsystem's defaults) and the recipes."""
