"""modeconn: mode connectivity to repair tampered networks and study adversarial robustness."""

__version__ = "0.1.0"
