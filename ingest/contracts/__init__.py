"""The contracts every part shares: the message, outcomes, ports, settings, logging."""
