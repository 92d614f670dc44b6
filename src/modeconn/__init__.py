"""modeconn: mode connectivity for repairing tampered networks and studying adversarial robustness."""

__version__ = "0.1.0"
